"""The one reader of JSON-lines files: every line decoded and parsed, or a DataError at file:line.

Bytes that are not UTF-8, malformed or too deeply nested JSON, and strings holding a lone UTF-16
surrogate (JSON allows the escape "\\ud800", but no text encoding can write it: it would fail
later, inside the tokenizer, with no file or line) are all errors naming the line.
"""
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from consensus_jax.data.errors import DataError

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _holds_lone_surrogate(obj: Any) -> bool:
  stack = [obj]
  while stack:
    value = stack.pop()
    if isinstance(value, str):
      if any("\ud800" <= ch <= "\udfff" for ch in value):
        return True
    elif isinstance(value, dict):
      stack.extend(value.keys())
      stack.extend(value.values())
    elif isinstance(value, list):
      stack.extend(value)
  return False


def iter_objects(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
  """Yields (line number, parsed JSON value) for each non-blank line of `path`."""
  with open(path, "rb") as f:
    for line_number, raw in enumerate(f, start=1):
      where = f"{path}:{line_number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte {e.start + 1} of the line is "
                        f"{raw[e.start:e.start + 1]!r})") from None
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON: {e.msg} (column {e.colno})") from None
      except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read") from None
      if _SURROGATE_ESCAPE.search(line) and _holds_lone_surrogate(obj):
        raise DataError(f"{where}: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                        "which is not text")
      yield line_number, obj
