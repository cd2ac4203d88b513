"""The deliberation-round schema and its validating JSONL reader and writer.

One JSONL line is one round: a question, the group's opinions, candidate statements, and
each member's ratings (and optionally rankings) of the candidates:

  {"id": "r1",
   "question": {"id": "q1", "text": "...", "topic": 3, "split": "train",
                "affirming_statement": "...", "negating_statement": "..."},
   "opinions": [{"participant_id": "p1", "text": "..."}, ...],
   "candidates": [{"id": "c1", "text": "...", "provenance": "model"}, ...],
   "agreement": {"p1": {"c1": 6, "c2": 3}, ...},
   "quality": {"p1": {"c1": 5}, ...},                  # optional
   "rankings": {"p1": ["c2", ["c1", "c3"], "c4"]},     # optional
   "metadata": {...}}                                  # optional, free-form

The group's participants are exactly the authors of the opinions. Ratings (agreement and
quality) are integers on the 1-7 Likert scale and may be partial. A ranking lists candidate
ids best first; an entry that is a list is a tie (those candidates share one place). In
Python a ranking is a tuple of tiers, each tier a tuple of ids. A ranking may omit
candidates; it may not name one twice.
"""
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from consensus_jax import atomic_io
from consensus_jax.data import jsonl
from consensus_jax.data.errors import DataError, require_text

RATING_MIN = 1
RATING_MAX = 7
_ROUND_KEYS = frozenset({"id", "question", "opinions", "candidates", "agreement", "quality",
                         "rankings", "metadata"})

Ratings = Mapping[str, Mapping[str, int]]  # participant_id -> candidate_id -> rating
Ranking = tuple[tuple[str, ...], ...]  # tiers, best first


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  text: str
  topic: int
  split: str
  affirming_statement: str = ""
  negating_statement: str = ""


@dataclasses.dataclass(frozen=True)
class Opinion:
  participant_id: str
  text: str


@dataclasses.dataclass(frozen=True)
class Candidate:
  id: str
  text: str
  provenance: str = "model"


@dataclasses.dataclass(frozen=True)
class Round:
  id: str
  question: Question
  opinions: tuple[Opinion, ...]
  candidates: tuple[Candidate, ...]
  agreement: Ratings
  quality: Ratings | None = None
  rankings: Mapping[str, Ranking] | None = None
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def participant_ids(self) -> list[str]:
    return [opinion.participant_id for opinion in self.opinions]

  @property
  def candidate_ids(self) -> list[str]:
    return [candidate.id for candidate in self.candidates]

  def candidate(self, candidate_id: str) -> Candidate:
    return next(c for c in self.candidates if c.id == candidate_id)

  def best_candidate_id(self) -> str:
    """The candidate with the highest mean agreement over the members who rated it.

    Ties go to the higher minimum rating (the least-satisfied member), then to the earlier
    candidate, so the choice is deterministic.
    """
    def key(indexed):
      index, candidate = indexed
      ratings = [r[candidate.id] for r in self.agreement.values() if candidate.id in r]
      if not ratings:
        return (float("-inf"), float("-inf"), -index)
      return (sum(ratings) / len(ratings), min(ratings), -index)
    return max(enumerate(self.candidates), key=key)[1].id


QUESTION_SPLITS = ("train", "iid_test", "ood_test")


class _Problem(Exception):
  """A validation failure without a location; the caller adds file and line."""


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise _Problem(message)


def _text(obj: Mapping[str, Any], key: str, owner: str) -> str:
  try:
    return require_text(obj.get(key), f"{owner}: '{key}'")
  except DataError as e:
    raise _Problem(str(e)) from None


def _mapping(value: Any, owner: str) -> Mapping[str, Any]:
  _require(isinstance(value, dict), f"{owner} must be a JSON object, got {type(value).__name__}")
  return value


def _list(value: Any, owner: str) -> list[Any]:
  _require(isinstance(value, list), f"{owner} must be a JSON list, got {type(value).__name__}")
  return value


def _parse_question(obj: Any) -> Question:
  obj = _mapping(obj, "question")
  topic = obj.get("topic", -1)
  _require(isinstance(topic, int) and not isinstance(topic, bool),
           f"question: 'topic' must be an integer, got {topic!r}")
  optional = {}
  for key in ("affirming_statement", "negating_statement"):
    if key in obj:
      optional[key] = _text(obj, key, "question")
  return Question(id=_text(obj, "id", "question"), text=_text(obj, "text", "question"),
                  topic=topic, split=_text(obj, "split", "question"), **optional)


def _parse_opinions(value: Any) -> tuple[Opinion, ...]:
  opinions = []
  seen = set()
  for index, obj in enumerate(_list(value, "opinions")):
    obj = _mapping(obj, f"opinions[{index}]")
    participant_id = _text(obj, "participant_id", f"opinions[{index}]")
    _require(participant_id not in seen, f"duplicate participant id {participant_id!r}")
    seen.add(participant_id)
    opinions.append(Opinion(participant_id, _text(obj, "text", f"opinion of {participant_id!r}")))
  _require(len(opinions) >= 2, f"a round needs at least two members' opinions (a consensus is "
           f"among several people), got {len(opinions)}")
  return tuple(opinions)


def _parse_candidates(value: Any) -> tuple[Candidate, ...]:
  candidates = []
  seen = set()
  for index, obj in enumerate(_list(value, "candidates")):
    obj = _mapping(obj, f"candidates[{index}]")
    candidate_id = _text(obj, "id", f"candidates[{index}]")
    _require(candidate_id not in seen, f"duplicate candidate id {candidate_id!r}")
    seen.add(candidate_id)
    provenance = _text(obj, "provenance", f"candidate {candidate_id!r}") if (
        "provenance" in obj) else "model"
    candidates.append(Candidate(candidate_id, _text(obj, "text", f"candidate {candidate_id!r}"),
                                provenance))
  _require(bool(candidates), "a round needs at least one candidate statement")
  return tuple(candidates)


def _parse_ratings(value: Any, kind: str, participants: set[str],
                   candidates: set[str]) -> dict[str, dict[str, int]]:
  ratings = {}
  for participant_id, by_candidate in _mapping(value, kind).items():
    _require(participant_id in participants,
             f"{kind} rating by unknown participant {participant_id!r}")
    row = {}
    for candidate_id, rating in _mapping(by_candidate, f"{kind} of {participant_id!r}").items():
      _require(candidate_id in candidates,
               f"{kind} rating by {participant_id!r} of unknown candidate {candidate_id!r}")
      _require(isinstance(rating, int) and not isinstance(rating, bool)
               and RATING_MIN <= rating <= RATING_MAX,
               f"{kind} rating {rating!r} by {participant_id!r} of {candidate_id!r} is not an "
               f"integer in {RATING_MIN}-{RATING_MAX}")
      row[candidate_id] = rating
    ratings[participant_id] = row
  return ratings


def _parse_rankings(value: Any, participants: set[str],
                    candidates: set[str]) -> dict[str, Ranking]:
  rankings = {}
  for participant_id, entries in _mapping(value, "rankings").items():
    _require(participant_id in participants,
             f"ranking by unknown participant {participant_id!r}")
    tiers = []
    named = set()
    for entry in _list(entries, f"ranking of {participant_id!r}"):
      tier = tuple(entry) if isinstance(entry, list) else (entry,)
      _require(bool(tier), f"ranking of {participant_id!r} has an empty tie group")
      for candidate_id in tier:
        _require(isinstance(candidate_id, str) and candidate_id in candidates,
                 f"ranking of {participant_id!r} names unknown candidate {candidate_id!r}")
        _require(candidate_id not in named,
                 f"ranking of {participant_id!r} names candidate {candidate_id!r} twice")
        named.add(candidate_id)
      tiers.append(tier)
    rankings[participant_id] = tuple(tiers)
  return rankings


def round_from_dict(obj: Any, where: str = "<round>") -> Round:
  """Builds and validates a Round from its JSON form; DataError messages start with `where`."""
  try:
    return _round_from_dict(obj)
  except _Problem as e:
    raise DataError(f"{where}: {e}") from None


def _round_from_dict(obj: Any) -> Round:
  obj = _mapping(obj, "round")
  unknown = set(obj) - _ROUND_KEYS
  _require(not unknown, f"unknown round field(s) {sorted(unknown)}")
  for key in ("question", "opinions", "candidates", "agreement"):
    _require(key in obj, f"missing round field '{key}'")
  opinions = _parse_opinions(obj["opinions"])
  candidates = _parse_candidates(obj["candidates"])
  participant_set = {o.participant_id for o in opinions}
  candidate_set = {c.id for c in candidates}
  quality = obj.get("quality")
  rankings = obj.get("rankings")
  metadata = obj.get("metadata", {})
  _mapping(metadata, "metadata")
  return Round(
      id=_text(obj, "id", "round"),
      question=_parse_question(obj["question"]),
      opinions=opinions,
      candidates=candidates,
      agreement=_parse_ratings(obj["agreement"], "agreement", participant_set, candidate_set),
      quality=None if quality is None else _parse_ratings(quality, "quality", participant_set,
                                                          candidate_set),
      rankings=None if rankings is None else _parse_rankings(rankings, participant_set,
                                                             candidate_set),
      metadata=metadata)


def round_to_dict(round_: Round) -> dict[str, Any]:
  question = dataclasses.asdict(round_.question)
  question = {k: v for k, v in question.items() if v != "" or k not in (
      "affirming_statement", "negating_statement")}
  obj = {
      "id": round_.id,
      "question": question,
      "opinions": [dataclasses.asdict(o) for o in round_.opinions],
      "candidates": [dataclasses.asdict(c) for c in round_.candidates],
      "agreement": {p: dict(r) for p, r in round_.agreement.items()},
  }
  if round_.quality is not None:
    obj["quality"] = {p: dict(r) for p, r in round_.quality.items()}
  if round_.rankings is not None:
    obj["rankings"] = {
        p: [tier[0] if len(tier) == 1 else list(tier) for tier in ranking]
        for p, ranking in round_.rankings.items()}
  if round_.metadata:
    obj["metadata"] = dict(round_.metadata)
  return obj


def iter_jsonl(path: str | os.PathLike) -> Iterator[Round]:
  """Yields validated rounds one line at a time; DataError names the file and line at fault."""
  path = pathlib.Path(path)
  seen_ids = {}
  for line_number, obj in jsonl.iter_objects(path):
    round_ = round_from_dict(obj, where=f"{path}:{line_number}")
    if round_.id in seen_ids:
      raise DataError(f"{path}:{line_number}: duplicate round id {round_.id!r} "
                      f"(first on line {seen_ids[round_.id]})")
    seen_ids[round_.id] = line_number
    yield round_


def read_jsonl(path: str | os.PathLike) -> list[Round]:
  return list(iter_jsonl(path))


def check_split_file(path: str | os.PathLike, split: str) -> int:
  """Reads a whole split file before any compute; returns its number of rounds.

  Besides every round's own validation: the file holds at least one rated round, and a round
  whose question belongs to another split (train / iid_test / ood_test) is refused, since it
  would leak a held-out question into training or the reverse.
  """
  count = rated = 0
  for round_ in iter_jsonl(path):
    count += 1
    rated += any(round_.agreement.values())
    if split in QUESTION_SPLITS and round_.question.split != split:
      raise DataError(f"{path}: round {round_.id!r}: its question {round_.question.id!r} is in "
                      f"split {round_.question.split!r}, but the file is the {split!r} split")
  if not count:
    raise DataError(f"{path}: no rounds (empty file)")
  if not rated:
    raise DataError(f"{path}: {count} round(s) but none has a rating to learn from")
  return count


def write_jsonl(path: str | os.PathLike, rounds: Iterable[Round]) -> int:
  """Validates and writes rounds atomically (temp file + rename); returns the count.

  A bad round raises DataError naming the line it would have had, and leaves any existing
  file at `path` untouched.
  """
  path = pathlib.Path(path)
  seen_ids = set()
  count = 0
  with atomic_io.open_atomic(path) as f:
    for count, round_ in enumerate(rounds, start=1):
      obj = round_to_dict(round_)
      round_from_dict(obj, where=f"{path}:{count}")
      if round_.id in seen_ids:
        raise DataError(f"{path}:{count}: duplicate round id {round_.id!r}")
      seen_ids.add(round_.id)
      try:
        line = json.dumps(obj, ensure_ascii=False)
      except TypeError as e:
        raise DataError(f"{path}:{count}: round {round_.id!r} is not JSON-serialisable: {e}")
      try:
        f.write(line + "\n")
      except UnicodeEncodeError as e:
        raise DataError(f"{path}:{count}: round {round_.id!r} holds text that is not "
                        f"valid Unicode ({e.reason})") from None
  return count
