"""One live run per MODEL_DIR: a lock file that its holder's death (kill -9 included) releases.

Two runs writing one directory corrupt each other's checkpoints at their first save. The lock
is an flock on MODEL_DIR/run.lock, which the kernel drops when the holding process dies however
it dies, so a crashed run never blocks the next; the file records the holder's host and pid for
the message a second run gets. Only process 0 of a multi-process run takes it.
"""
import datetime
import fcntl
import os
import pathlib
import socket

LOCK_NAME = "run.lock"


class RunDirInUseError(RuntimeError):
  """Another live run holds this MODEL_DIR."""


class RunLock:

  def __init__(self, model_dir: str | pathlib.Path):
    self.path = pathlib.Path(model_dir) / LOCK_NAME
    self._fd = None

  def acquire(self) -> "RunLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
      os.close(fd)
      raise RunDirInUseError(
          f"{self.path.parent} is in use by another live run ({holder}); give this run its "
          "own MODEL_DIR, or stop the other one first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f"host {socket.gethostname()} pid {os.getpid()} since "
                   f"{datetime.datetime.now().isoformat(timespec='seconds')}\n").encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
