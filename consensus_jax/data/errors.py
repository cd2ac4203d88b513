"""The one exception type the data layer raises for bad input."""


class DataError(ValueError):
  """Input data is malformed; the message names the file and the line or row at fault."""
