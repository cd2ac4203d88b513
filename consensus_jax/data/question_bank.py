"""Loads the debate questions (questions.json) as records.Question."""
import json
import os
import pathlib

from consensus_jax.data import paths, records
from consensus_jax.data.errors import DataError
from consensus_jax.data.records import Question

SPLITS = records.QUESTION_SPLITS
_FIELDS = ("id", "question", "affirming_statement", "negating_statement", "topic", "split")


def load_questions(path: str | os.PathLike | None = None) -> list[Question]:
  path = pathlib.Path(path) if path is not None else paths.questions_path()
  try:
    entries = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from e
  if not isinstance(entries, list):
    raise DataError(f"{path}: expected a JSON list of questions")
  questions = []
  for index, entry in enumerate(entries):
    missing = [f for f in _FIELDS if not isinstance(entry, dict) or f not in entry]
    if missing:
      raise DataError(f"{path}: question #{index} lacks field(s) {missing}")
    if entry["split"] not in SPLITS:
      raise DataError(f"{path}: question #{index} ({entry['id']}) has unknown split "
                      f"{entry['split']!r}; expected one of {SPLITS}")
    questions.append(Question(
        id=entry["id"], text=entry["question"], topic=int(entry["topic"]), split=entry["split"],
        affirming_statement=entry["affirming_statement"],
        negating_statement=entry["negating_statement"]))
  return questions


def questions_by_split(questions: list[Question]) -> dict[str, list[Question]]:
  return {split: [q for q in questions if q.split == split] for split in SPLITS}
