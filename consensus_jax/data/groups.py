"""Groups to find a consensus for: a question and each member's opinion, read from JSONL.

One group per line:
  {"id": "g1", "question": "...", "opinions": ["...", "..."]}
  (an opinion may also be {"participant_id": "p1", "text": "..."})
A group needs at least two members and no empty opinion; ids must be unique (outputs are matched
to inputs by id). Every problem is a DataError naming the file and line.
"""
import dataclasses
import pathlib
from typing import Any

from consensus_jax.data import jsonl
from consensus_jax.data.errors import DataError, require_text


@dataclasses.dataclass(frozen=True)
class Group:
  id: str
  question: str
  participant_ids: tuple[str, ...]
  opinions: tuple[str, ...]


def _identifier(value: Any, where: str, what: str) -> str:
  """An id as text: a non-empty string, or an integer read as its decimal text."""
  if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
    raise DataError(f"{where}: {what} must be a non-empty string or an integer, got {value!r}")
  return str(value)


def _parse_group(obj: Any, where: str) -> Group:
  if not isinstance(obj, dict):
    raise DataError(f"{where}: a group must be a JSON object")
  for key in ("id", "question", "opinions"):
    if key not in obj:
      raise DataError(f"{where}: missing field {key!r}")
  group_id = _identifier(obj["id"], where, "'id'")
  question = require_text(obj["question"], f"{where}: group {group_id!r}: 'question'")
  opinions = obj["opinions"]
  if not isinstance(opinions, list) or len(opinions) < 2:
    raise DataError(f"{where}: group {group_id!r} has "
                    f"{len(opinions) if isinstance(opinions, list) else 'no'} opinion(s); a "
                    "consensus needs at least two members")
  ids, texts = [], []
  for i, opinion in enumerate(opinions):
    what = f"group {group_id!r}: opinion {i + 1}"
    if isinstance(opinion, dict):
      pid = _identifier(opinion.get("participant_id", f"m{i + 1}"), where,
                        f"{what}: 'participant_id'")
      text = require_text(opinion.get("text"), f"{where}: {what}: 'text'")
    else:
      pid, text = f"m{i + 1}", require_text(opinion, f"{where}: {what}")
    ids.append(pid)
    texts.append(text)
  if len(set(ids)) != len(ids):
    raise DataError(f"{where}: group {group_id!r}: duplicate participant ids")
  return Group(group_id, question, tuple(ids), tuple(texts))


def groups_from_rounds(rounds, limit: int) -> list[dict]:
  """The question and opinions of deliberation rounds, as infer's input records."""
  return [{"id": r.id, "question": r.question.text,
           "opinions": [{"participant_id": o.participant_id, "text": o.text} for o in r.opinions]}
          for r in list(rounds)[:limit]]


def read_groups_from_rounds(rounds) -> list[Group]:
  """Deliberation rounds as the groups the runner takes (their question and opinions)."""
  return [Group(r.id, r.question.text, tuple(o.participant_id for o in r.opinions),
                tuple(o.text for o in r.opinions)) for r in rounds]


def read_groups(path: str | pathlib.Path) -> list[Group]:
  """Every group of a JSONL file, validated before any model loads; group ids must be unique
  (outputs are matched to inputs by id)."""
  groups, first_line = [], {}
  if not pathlib.Path(path).is_file():
    raise DataError(f"{path}: no such input file")
  for line_number, obj in jsonl.iter_objects(path):
    where = f"{path}:{line_number}"
    group = _parse_group(obj, where)
    if group.id in first_line:
      raise DataError(f"{where}: duplicate group id {group.id!r} (first on line "
                      f"{first_line[group.id]})")
    first_line[group.id] = line_number
    groups.append(group)
  if not groups:
    raise DataError(f"{path}: no groups")
  return groups
