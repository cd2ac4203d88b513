"""Bazel's entry point for a py_test: runs the test file named by the first argument under
pytest, with the project's pytest.ini, and writes the JUnit XML Bazel asks for."""
import os
import pathlib
import sys

import pytest


def main() -> int:
  root = pathlib.Path(os.environ["TEST_SRCDIR"]) / os.environ["TEST_WORKSPACE"]
  import consensus_jax  # pylint: disable=import-outside-toplevel
  package_dir = pathlib.Path(consensus_jax.__file__).parent
  if package_dir != root / "consensus_jax":
    # The editable install in .venv would otherwise hide a dependency missing from BUILD.
    print(f"bazel_runner: consensus_jax was imported from {package_dir}, not from Bazel's "
          f"runfiles ({root}); PYTHONPATH or the environment is wrong", file=sys.stderr)
    return 1
  args = [str(root / sys.argv[1]), "-c", str(root / "pytest.ini"), "--rootdir", str(root), "-q",
          *sys.argv[2:]]
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
  code = pytest.main(args)
  return 1 if code == pytest.ExitCode.NO_TESTS_COLLECTED else int(code)


if __name__ == "__main__":
  sys.exit(main())
