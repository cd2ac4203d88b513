#!/usr/bin/env bash
# Sets up the environment and runs the default test suite (slow tests excluded; pass -m slow
# to run only those, or -m "" for everything). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh || exit 1
. .venv/bin/activate
python -m pytest -q --durations=30 "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$code"
