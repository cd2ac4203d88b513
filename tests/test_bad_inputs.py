"""A harness of generated malformed inputs against every reader: records JSONL, infer groups, Polis
folders, gin/CLI bindings and Hugging Face safetensors files.

Each case must end one of two ways: the project's own error type with the offending file and line
(or row, column, field or binding) in its message ("clear error"), or acceptance with a meaning
documented in README "What bad input gets" and listed here ("accepted as documented"). Any other
exception ("raw traceback") or an acceptance not listed ("silent") fails the test. The counts by
class are printed (pytest -s shows them).
"""
import collections
import copy
import csv
import json
import re
import struct

import numpy as np
import pytest

from consensus_jax import gin_utils, input_pipeline, serving, trainer
from consensus_jax.data import groups as groups_lib, polis, question_bank, records, synthetic
from consensus_jax.data.errors import DataError
from consensus_jax.models import safetensors_io

CLEAR, DOCUMENTED, RAW, SILENT = "clear error", "accepted as documented", "raw traceback", "silent"
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
TYPE_SWAPS = (None, 3, 2.5, True, "x", "", [], {}, ["x"])


def _classify(reader: str, case: str, run, error_types, location: str | re.Pattern,
              documented: bool = False) -> str:
  try:
    run()
  except error_types as error:
    message = str(error)
    found = (location.search(message) if isinstance(location, re.Pattern)
             else location in message)
    outcome = CLEAR if found else RAW
    detail = message
  except Exception as error:  # pylint: disable=broad-except
    outcome, detail = RAW, f"{type(error).__name__}: {error}"
  else:
    outcome, detail = (DOCUMENTED if documented else SILENT), "accepted"
  COUNTS[reader][outcome] += 1
  assert outcome in (CLEAR, DOCUMENTED), f"{reader} / {case}: {outcome}: {detail[:400]}"
  return outcome


# --- Records (JSONL rounds) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def good_round(shared_data_dir):
  del shared_data_dir
  question = next(q for q in question_bank.load_questions() if q.split == "train")
  round_ = synthetic.generate_round(question, "r0", np.random.default_rng(0), group_size=3,
                                    num_candidates=3)
  return records.round_to_dict(round_)


def _record_cases(good: dict):
  """(case name, line bytes, accepted-as-documented?)."""
  cases = []

  def edited(name, edit, documented=False):
    obj = copy.deepcopy(good)
    edit(obj)
    cases.append((name, json.dumps(obj).encode(), documented))

  optional_absent = {"quality", "rankings", "metadata"}
  for key in ("id", "question", "opinions", "candidates", "agreement"):
    edited(f"missing {key}", lambda o, k=key: o.pop(k))
  for key in sorted(records._ROUND_KEYS):  # pylint: disable=protected-access
    for value in TYPE_SWAPS:
      # quality/rankings null or an empty mapping mean "none given"; metadata {} likewise.
      documented = (key in optional_absent and value in (None, {}) and not (
          key == "metadata" and value is None)) or (key == "id" and value == "x")
      edited(f"{key} = {value!r}", lambda o, k=key, v=value: o.__setitem__(k, v), documented)
  for key in ("id", "text", "split", "topic"):
    edited(f"question without {key}", lambda o, k=key: o["question"].pop(k),
           documented=key == "topic")  # topic is optional (-1: unknown)
    for value in TYPE_SWAPS:
      edited(f"question.{key} = {value!r}",
             lambda o, k=key, v=value: o["question"].__setitem__(k, v),
             # any non-empty text, any integer topic
             documented=(key in ("id", "text") and value == "x") or (key == "topic" and value == 3))
  edited("question from another split", lambda o: o["question"].__setitem__("split", "ood_test"))
  for key in ("participant_id", "text"):
    for value in TYPE_SWAPS:
      edited(f"opinion.{key} = {value!r}",
             lambda o, k=key, v=value: o["opinions"][0].__setitem__(k, v),
             documented=value == "x")  # any non-empty text is an opinion or a unique id
  edited("one opinion", lambda o: o.__setitem__("opinions", o["opinions"][:1]))
  edited("duplicate participant", lambda o: o["opinions"].append(dict(o["opinions"][0])))
  edited("no candidates", lambda o: o.__setitem__("candidates", []))
  edited("duplicate candidate", lambda o: o["candidates"].append(dict(o["candidates"][0])))
  for key in ("id", "text", "provenance"):
    for value in (None, 3, "", []):
      edited(f"candidate.{key} = {value!r}",
             lambda o, k=key, v=value: o["candidates"][0].__setitem__(k, v))
  first_member = good["opinions"][0]["participant_id"]
  first_candidate = good["candidates"][0]["id"]
  for value in (0, 8, 9, -1, 3.5, "5", True, None, [4]):
    edited(f"rating {value!r}",
           lambda o, v=value: o["agreement"][first_member].__setitem__(first_candidate, v))
  edited("rating by a stranger", lambda o: o["agreement"].__setitem__("stranger", {}))
  edited("rating of an unknown candidate",
         lambda o: o["agreement"][first_member].__setitem__("nope", 4))
  for name, ranking in [("unknown candidate", ["nope"]), ("named twice", [first_candidate] * 2),
                        ("empty tie", [[]]), ("not a list", "c0"), ("number", [3])]:
    edited(f"ranking: {name}",
           lambda o, r=ranking: o.setdefault("rankings", {}).__setitem__(first_member, r))
  edited("unknown field", lambda o: o.__setitem__("surprise", 1))
  line = json.dumps(good).encode()
  for cut in (1, 10, len(line) // 3, len(line) // 2, len(line) - 1):
    cases.append((f"truncated at byte {cut}", line[:cut], False))
  for position in (0, 5, len(line) // 2):
    cases.append((f"invalid UTF-8 at byte {position}",
                  line[:position] + b"\xff\xfe" + line[position:], False))
  cases.append(("UTF-8 byte order mark", b"\xef\xbb\xbf" + line, False))
  cases.append(("lone surrogate in an opinion", line.replace(
      json.dumps(good["opinions"][0]["text"]).encode(), b'"I \\udc80 think"'), False))
  cases.append(("nested 100000 deep", b"[" * 100000 + b"]" * 100000, False))
  cases.append(("a JSON list, not an object", b"[1, 2]", False))
  cases.append(("a bare number", b"7", False))
  return cases


def test_records_reader(tmp_path, good_round):
  cases = _record_cases(good_round)
  for index, (name, line, documented) in enumerate(cases):
    path = tmp_path / f"case{index}" / "train.jsonl"
    path.parent.mkdir()
    path.write_bytes(line + b"\n")
    # A line's fault names the line; a whole-file fault (no rated round) names the file.
    location = re.compile(re.escape(str(path)) + r"(:\d+: |: round 'r0'|: 1 round\(s\))")
    _classify("records", name, lambda p=path: records.check_split_file(p, "train"), DataError,
              location, documented)
  for name, content, message in [("empty file", b"", "no rounds"),
                                 ("blank lines only", b"\n \n", "no rounds")]:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(content)
    _classify("records", name, lambda p=path: records.check_split_file(p, "train"), DataError,
              f"{path}: {message}")
  assert sum(COUNTS["records"].values()) >= 120


# --- infer's groups ---------------------------------------------------------------------------


def test_infer_groups_reader(tmp_path):
  good = {"id": "g1", "question": "Should cities ban cars?",
          "opinions": ["Yes, cars pollute.", {"participant_id": "p2", "text": "No."}]}
  cases = []
  for key in ("id", "question", "opinions"):
    obj = copy.deepcopy(good)
    obj.pop(key)
    cases.append((f"missing {key}", obj, False))
    for value in TYPE_SWAPS:
      obj = copy.deepcopy(good)
      obj[key] = value
      # Any non-empty text is a valid id or question; an integer id is read as its decimal
      # text (documented: ids may be numbers).
      cases.append((f"{key} = {value!r}", obj, (key == "id" and value in (3, "x")) or (
          key == "question" and value == "x")))
  for value in TYPE_SWAPS:
    obj = copy.deepcopy(good)
    obj["opinions"][0] = value
    cases.append((f"opinion = {value!r}", obj, value == "x"))
    obj = copy.deepcopy(good)
    obj["opinions"][1]["participant_id"] = value
    # A missing participant_id falls back to m<i>; an integer one is read as its text.
    cases.append((f"participant_id = {value!r}", obj, value in (3, "x")))
  obj = copy.deepcopy(good)
  obj["opinions"][1]["participant_id"] = "m1"
  cases.append(("duplicate participant", obj, False))
  for index, (name, obj, documented) in enumerate(cases):
    path = tmp_path / f"groups{index}.jsonl"
    path.write_text(json.dumps(obj) + "\n")
    _classify("infer groups", name, lambda p=path: groups_lib.read_groups(p), DataError,
              f"{path}:1: ", documented)
  line = json.dumps(good)
  raw_cases = [("duplicate id", (line + "\n" + line).encode(), ":2: duplicate group id"),
               ("invalid UTF-8", line.encode()[:20] + b"\xc3\x28" + line.encode()[20:], ":1: "),
               ("truncated", line.encode()[:30], ":1: malformed JSON"),
               ("empty file", b"", ": no groups"),
               ("surrogate", line.replace("No.", "\\ud83d").encode(), ":1: a string holds")]
  for name, content, message in raw_cases:
    path = tmp_path / f"raw_{name}.jsonl"
    path.write_bytes(content)
    _classify("infer groups", name, lambda p=path: groups_lib.read_groups(p), DataError,
              f"{path}{message}")
  assert sum(COUNTS["infer groups"].values()) >= 45


# --- Polis folders ------------------------------------------------------------------------------


def _polis_folder(path, summary=None, comments=None, votes=None):
  path.mkdir(parents=True)
  summary = summary if summary is not None else [["topic", "Transit"],
                                                 ["conversation-description", "d"]]
  comments = comments if comments is not None else [
      ["timestamp", "datetime", "comment-id", "author-id", "agrees", "disagrees", "moderated",
       "comment-body"],
      ["1", "x", "0", "0", "1", "0", "1", "Buses should run all night."],
      ["2", "x", "1", "1", "0", "1", "0", "Fares should be free."]]
  votes = votes if votes is not None else [
      ["participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree", "0", "1"],
      ["0", "0", "1", "2", "1", "1", "1", "-1"], ["1", "1", "1", "1", "0", "1", "", "-1"]]
  for name, rows in (("summary.csv", summary), ("comments.csv", comments),
                     ("participants-votes.csv", votes)):
    with open(path / name, "w", newline="", encoding="utf-8") as f:
      csv.writer(f).writerows(rows)
  return path


def test_polis_reader(tmp_path):
  _polis_folder(tmp_path / "good")
  assert polis.load_conversation(tmp_path / "good").num_votes == 3
  base_votes = [["participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree",
                 "0", "1"], ["0", "0", "1", "2", "1", "1", "1", "-1"]]
  cases = []
  for value in ("2", "yes", "1.0", "--1", " 1"):
    votes = copy.deepcopy(base_votes)
    votes[1][6] = value
    cases.append((f"vote {value!r}", dict(votes=votes), "participants-votes.csv: row 1"))
  for column, value, where in [(0, "c0", "column 7: 'c0' is neither"), (1, "0", "column 8: "),
                               (1, "7", "column 8: votes for unknown comment 7")]:
    votes = copy.deepcopy(base_votes)
    votes[0][6 + column] = value
    cases.append((f"header {value!r}", dict(votes=votes), f"line 1 (header), {where}"))
  votes = copy.deepcopy(base_votes)
  votes[0][0] = "who"
  cases.append(("first column renamed", dict(votes=votes), "first column must be"))
  votes = copy.deepcopy(base_votes) + [["0", "0", "1", "1", "1", "0", "1", ""]]
  cases.append(("participant twice", dict(votes=votes), "participant 0 appears on more"))
  votes = copy.deepcopy(base_votes)
  votes[1].pop()
  cases.append(("short row", dict(votes=votes), "row 1 (line 2): 7 fields"))
  votes = copy.deepcopy(base_votes)
  votes[1][0] = "p0"
  cases.append(("participant not a number", dict(votes=votes), "column 'participant'"))
  comment_header = ["timestamp", "datetime", "comment-id", "author-id", "agrees", "disagrees",
                    "moderated", "comment-body"]
  for index, value, where in [(6, "2", "moderated must be -1, 0 or 1"),
                              (6, "x", "column 'moderated'"), (2, "zero", "column 'comment-id'"),
                              (3, "", "column 'author-id'")]:
    row = ["1", "x", "0", "0", "1", "0", "1", "Buses."]
    row[index] = value
    cases.append((f"comment field {index} = {value!r}",
                  dict(comments=[comment_header, row, ["2", "x", "1", "1", "0", "1", "0", "F."]]),
                  "comments.csv: row 1 (line 2)"))
  cases.append(("comment header lacks body", dict(comments=[comment_header[:-1]]),
                "missing column(s) ['comment-body']"))
  cases.append(("comment id twice", dict(comments=[comment_header,
                                                   ["1", "x", "0", "0", "1", "0", "1", "A."],
                                                   ["1", "x", "0", "0", "1", "0", "1", "B."]]),
                "duplicate comment-id 0"))
  cases.append(("no topic", dict(summary=[["conversation-description", "d"]]), "no 'topic' row"))
  for index, (name, kwargs, message) in enumerate(cases):
    folder = _polis_folder(tmp_path / f"case{index}", **kwargs)
    _classify("polis", name, lambda f=folder: polis.load_conversation(f), DataError, message)
  folder = _polis_folder(tmp_path / "bytes")
  (folder / "comments.csv").write_bytes((folder / "comments.csv").read_bytes() + b"\xff\n")
  _classify("polis", "invalid UTF-8", lambda: polis.load_conversation(folder), DataError,
            "comments.csv: line 4: not UTF-8")
  for name in ("summary.csv", "comments.csv", "participants-votes.csv"):
    folder = _polis_folder(tmp_path / f"without_{name}")
    (folder / name).unlink()
    _classify("polis", f"missing {name}", lambda f=folder: polis.load_conversation(f),
              DataError, f"{name}: missing file")
  assert sum(COUNTS["polis"].values()) >= 20


# --- gin and command-line bindings ------------------------------------------------------------


def test_bindings(tmp_path):
  base = dict(task="t", task_feature_lengths={"inputs": 8, "targets": 8}, batch_size=8)
  for key, values in (("batch_size", (0, -1, 2.5, "8", True, None)),
                      ("task_feature_lengths", ({"inputs": 0}, {"inputs": 2.0}, {}, [8], None,
                                                {"inputs": "8"}))):
    for value in values:
      _classify("bindings", f"InputConfig.{key} = {value!r}",
                lambda k=key, v=value: input_pipeline.InputConfig(**{**base, k: v}),
                gin_utils.BindingError, re.compile(r"BATCH_SIZE|TASK_FEATURE_LENGTHS"))
  train_input = input_pipeline.InputConfig(**base)
  for key, values, binding in (
      ("total_steps", (0, -3, 2.5, "abc", True, None), "TRAIN_STEPS"),
      ("checkpoint_every_steps", (0, 1.5, "x"), "train.checkpoint_every_steps"),
      ("log_every_steps", (0, None, False), "train.log_every_steps"),
      ("eval_every_steps", (-1, 0.5), "train.eval_every_steps"),
      ("num_micro_batches", (0, 2.0), "train.num_micro_batches"),
      ("model_dir", (None,), "MODEL_DIR")):
    for value in values:
      kwargs = dict(model_dir=str(tmp_path / "run"), objective=object(), train_input=train_input,
                    total_steps=2)
      kwargs[key] = value
      _classify("bindings", f"train.{key} = {value!r}", lambda kw=kwargs: trainer.train(**kw),
                gin_utils.BindingError, binding)
  for arg in ("--gin.", "--gin.=3", "--gin.TRAIN_STEPS"):
    _classify("bindings", f"argv {arg!r}", lambda a=arg: gin_utils.rewrite_gin_args(["x", a]),
              gin_utils.UnknownGinBindingError, repr(arg))
  assert not (tmp_path / "run").exists()
  assert sum(COUNTS["bindings"].values()) >= 30


# --- Hugging Face safetensors headers ---------------------------------------------------------


def _safetensors(path, header, data, header_len=None):
  header_bytes = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(header_bytes) if header_len is None else header_len)
                   + header_bytes + data)
  return path


def test_safetensors_reader(tmp_path):
  good = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
          "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]}}
  data = bytes(24)
  _safetensors(tmp_path / "good.safetensors", good, data)
  assert safetensors_io.SafetensorsShard(tmp_path / "good.safetensors").shape("b") == (4,)
  cases = []
  for field, values in (("dtype", ("F8_E4M3", "f32", None, 3, "U8", "BOOL", "I8", "")),
                        ("shape", ([-1, 4], [2, 2.0], "2x2", None, [True, 4], [4, 4])),
                        ("data_offsets", ([0], [0, 15], [4, 20], [-4, 12], [0, 10 ** 12],
                                          None, "0-16", [16, 0], [0.0, 16.0]))):
    for value in values:
      header = copy.deepcopy(good)
      header["a"][field] = value
      cases.append((f"a.{field} = {value!r}", header, data, None, "'a'"))
  overlap = copy.deepcopy(good)
  overlap["b"]["data_offsets"] = [8, 16]
  overlap["b"]["shape"] = [4]
  cases.append(("overlapping tensors", overlap, data, None, "overlap"))
  for cut in (0, 10, 23):
    cases.append((f"data truncated to {cut} bytes", good, data[:cut], None, "fall outside"))
  for claimed in (2 ** 63, 2 ** 40, 10 ** 6):
    cases.append((f"header length {claimed}", good, data, claimed, "exceeds the file"))
  cases.append(("header is a list", [1, 2], b"", None, "not a JSON object"))
  cases.append(("entry is a string", {"a": "F32"}, data, None, "not an object"))
  for index, (name, header, payload, header_len, message) in enumerate(cases):
    path = _safetensors(tmp_path / f"case{index}.safetensors", header, payload, header_len)
    _classify("safetensors", name, lambda p=path: safetensors_io.SafetensorsShard(p),
              safetensors_io.SafetensorsError, re.compile(re.escape(str(path)) + ".*" +
                                                          re.escape(message)))
  for name, content in (("empty file", b""), ("7 bytes", b"\x01" * 7),
                        ("header not JSON", struct.pack("<Q", 4) + b"{{{{"),
                        ("header not UTF-8", struct.pack("<Q", 2) + b"\xff\xfe")):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(content)
    _classify("safetensors", name, lambda p=path: safetensors_io.SafetensorsShard(p),
              safetensors_io.SafetensorsError, str(path))
  assert sum(COUNTS["safetensors"].values()) >= 35


def test_zz_print_the_counts():
  """Runs last in this module: the table the closing note quotes."""
  total = collections.Counter()
  for reader, counts in sorted(COUNTS.items()):
    total.update(counts)
    print(f"{reader:14s} " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
  print(f"{'all':14s} " + ", ".join(f"{k}: {v}" for k, v in sorted(total.items())))
  if len(COUNTS) == 5:  # the whole module ran: 200+ cases, no raw traceback, nothing silent
    assert sum(total.values()) >= 200
    assert total[RAW] == 0 and total[SILENT] == 0
