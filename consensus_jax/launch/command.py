"""The command every host runs: one of the project's binaries with the user's flags, quoted so
that gin values with spaces, quotes and brackets reach the binary unchanged."""
import shlex
from collections.abc import Sequence

BINARIES = ("train", "eval", "infer", "collect")


class LaunchError(ValueError):
  """A launch that cannot be right: an unknown binary, a missing setting."""


def binary_argv(binary: str, args: Sequence[str], multiprocess: bool = True) -> list[str]:
  if binary not in BINARIES:
    raise LaunchError(f"unknown binary {binary!r}; one of {', '.join(BINARIES)}")
  return ["python", "-m", f"consensus_jax.{binary}", *(["--multiprocess"] if multiprocess else []),
          *args]


def shell_line(argv: Sequence[str]) -> str:
  """argv as one POSIX shell line that a remote bash splits back into exactly argv."""
  return shlex.join(argv)


def split_at_double_dash(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(the launcher's own flags, the binary's flags): everything after the first `--` is the
  binary's."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  return argv[:argv.index("--")], argv[argv.index("--") + 1:]
