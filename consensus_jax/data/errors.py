"""The one exception type the data layer raises for bad input, and the checks its readers share."""
from typing import Any


class DataError(ValueError):
  """Input data is malformed; the message names the file and the line or row at fault."""


def require_text(value: Any, what: str) -> str:
  """`value` if it is a non-empty string, else a DataError "<what> must be a string" / "is empty".

  A JSON null or number read as text would be used as "None" or "3": it is refused instead.
  `what` names the field; callers put the file and line in it or add them when they re-raise.
  """
  if not isinstance(value, str):
    raise DataError(f"{what} must be a string, got {value!r}")
  if not value.strip():
    raise DataError(f"{what} is empty")
  return value
