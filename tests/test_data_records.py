"""records.py: JSONL round trip and every validation error, located by file and line."""
import json

import pytest

from consensus_jax.data import records
from consensus_jax.data.errors import DataError


def _round_dict(round_id="r1"):
  return {
      "id": round_id,
      "question": {"id": "q1", "text": "Should we plant more trees?", "topic": 2,
                   "split": "train", "affirming_statement": "We should plant more trees.",
                   "negating_statement": "We should NOT plant more trees."},
      "opinions": [{"participant_id": "p1", "text": "Yes, trees are good."},
                   {"participant_id": "p2", "text": "Only if it is cheap."}],
      "candidates": [{"id": "c1", "text": "Plant trees where cheap.", "provenance": "model"},
                     {"id": "c2", "text": "Plant trees everywhere.", "provenance": "human"},
                     {"id": "c3", "text": "Do not plant trees.", "provenance": "model"}],
      "agreement": {"p1": {"c1": 6, "c2": 7, "c3": 1}, "p2": {"c1": 6, "c2": 2}},
      "quality": {"p1": {"c1": 5}},
      "rankings": {"p1": ["c2", "c1", "c3"], "p2": ["c1", ["c2", "c3"]]},
      "metadata": {"source": "unit test"},
  }


def _write_lines(path, objs):
  path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
  return path


def test_round_trip_preserves_every_field(tmp_path):
  path = _write_lines(tmp_path / "in.jsonl", [_round_dict("r1"), _round_dict("r2")])
  rounds = records.read_jsonl(path)
  assert [r.id for r in rounds] == ["r1", "r2"]
  first = rounds[0]
  assert first.question.affirming_statement == "We should plant more trees."
  assert first.participant_ids == ["p1", "p2"]
  assert first.candidate("c2").provenance == "human"
  assert first.agreement["p2"] == {"c1": 6, "c2": 2}
  assert first.rankings["p2"] == (("c1",), ("c2", "c3"))
  assert first.quality == {"p1": {"c1": 5}}

  out = tmp_path / "out.jsonl"
  assert records.write_jsonl(out, rounds) == 2
  assert records.read_jsonl(out) == rounds
  assert [json.loads(line) for line in out.read_text().splitlines()] == [
      _round_dict("r1"), _round_dict("r2")]


def test_iter_jsonl_is_lazy(tmp_path):
  path = _write_lines(tmp_path / "in.jsonl", [_round_dict("r1"), "{broken"])
  iterator = records.iter_jsonl(path)
  assert next(iterator).id == "r1"  # the bad second line is not read yet
  with pytest.raises(DataError, match=r"in\.jsonl:2: malformed JSON"):
    next(iterator)


def test_best_candidate_uses_mean_then_min():
  round_ = records.round_from_dict(_round_dict())
  # c1 mean 6.0, c2 mean 4.5, c3 mean 1.0
  assert round_.best_candidate_id() == "c1"


def _corrupt(mutate):
  obj = _round_dict()
  mutate(obj)
  return obj


BAD_RECORDS = {
    "rating above 7": (
        lambda o: o["agreement"]["p1"].update(c1=8), r"rating 8 by 'p1' of 'c1'.*1-7"),
    "rating 0": (lambda o: o["agreement"]["p2"].update(c1=0), r"rating 0 .*1-7"),
    "non-integer rating": (lambda o: o["quality"]["p1"].update(c1=4.5), r"quality rating 4\.5"),
    "unknown rater": (
        lambda o: o["agreement"].update(p9={"c1": 3}), r"unknown participant 'p9'"),
    "unknown rated candidate": (
        lambda o: o["agreement"]["p1"].update(c9=3), r"unknown candidate 'c9'"),
    "duplicate participant": (
        lambda o: o["opinions"].append({"participant_id": "p1", "text": "again"}),
        r"duplicate participant id 'p1'"),
    "duplicate candidate": (
        lambda o: o["candidates"].append({"id": "c2", "text": "x", "provenance": "model"}),
        r"duplicate candidate id 'c2'"),
    "empty opinion": (
        lambda o: o["opinions"][1].update(text="  "), r"opinion of 'p2': 'text' is empty"),
    "empty candidate": (
        lambda o: o["candidates"][0].update(text=""), r"candidate 'c1': 'text' is empty"),
    "empty question": (lambda o: o["question"].update(text=""), r"question: 'text' is empty"),
    "ranking unknown candidate": (
        lambda o: o["rankings"]["p1"].append("c7"), r"ranking of 'p1' names unknown candidate"),
    "ranking repeats candidate": (
        lambda o: o["rankings"]["p2"].append("c1"), r"names candidate 'c1' twice"),
    "ranking by unknown participant": (
        lambda o: o["rankings"].update(p5=["c1"]), r"ranking by unknown participant 'p5'"),
    "missing field": (lambda o: o.pop("candidates"), r"missing round field 'candidates'"),
    "unknown field": (lambda o: o.update(ratings={}), r"unknown round field"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_reader_names_file_and_line_of_bad_record(tmp_path, case):
  mutate, message = BAD_RECORDS[case]
  path = _write_lines(tmp_path / "bad.jsonl",
                      [_round_dict("ok1"), _round_dict("ok2"), _corrupt(mutate)])
  with pytest.raises(DataError, match=r"bad\.jsonl:3: .*" + message):
    records.read_jsonl(path)


def test_reader_rejects_malformed_json_and_duplicate_round_ids(tmp_path):
  path = _write_lines(tmp_path / "a.jsonl", [_round_dict("r1"), '{"id": "r2",'])
  with pytest.raises(DataError, match=r"a\.jsonl:2: malformed JSON"):
    records.read_jsonl(path)
  path = _write_lines(tmp_path / "b.jsonl", [_round_dict("r1"), _round_dict("r2"),
                                             _round_dict("r1")])
  with pytest.raises(DataError, match=r"b\.jsonl:3: duplicate round id 'r1' \(first on line 1\)"):
    records.read_jsonl(path)


def test_writer_validates_and_never_leaves_partial_file(tmp_path):
  good = records.round_from_dict(_round_dict("r1"))
  out = tmp_path / "out.jsonl"
  records.write_jsonl(out, [good])
  before = out.read_bytes()

  bad = records.round_from_dict(_round_dict("r2"))
  bad = records.Round(**{**bad.__dict__, "agreement": {"p1": {"c1": 9}}})
  with pytest.raises(DataError, match=r"out\.jsonl:2: .*rating 9"):
    records.write_jsonl(out, [records.round_from_dict(_round_dict("r3")), bad])
  with pytest.raises(DataError, match=r"out\.jsonl:2: duplicate round id 'r1'"):
    records.write_jsonl(out, [good, good])
  assert out.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp files left
