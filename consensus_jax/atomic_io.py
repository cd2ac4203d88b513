"""Files that appear whole or not at all: written to a temp file beside them, then renamed.

A crash, a full disk or a bad record half-way leaves the previous file (or none), never a
truncated one that a later reader would take for complete.
"""
import contextlib
import os
import pathlib
import tempfile
from typing import IO, Iterator


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
  """Text file handle whose content replaces `path` only if the block completes."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding=encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp_name, path)
  except BaseException:
    pathlib.Path(temp_name).unlink(missing_ok=True)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  with open_atomic(path) as f:
    f.write(text)


def check_writable_dir(directory: str | os.PathLike, what: str) -> pathlib.Path:
  """Creates `directory` and proves a file can be written there, before any compute; an
  OSError names the binding (`what`) and the directory."""
  directory = pathlib.Path(directory)
  try:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
      pass
  except OSError as e:
    raise OSError(f"{what}: cannot write into {directory} ({e.strerror or e})") from None
  return directory
