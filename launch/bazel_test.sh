#!/usr/bin/env bash
# Runs Bazel test targets offline with Debian's bazel-bootstrap, on the Python environment
# launch/setup.sh makes. Arguments are Bazel's (default: every test target, //tests/...).
#   bash launch/bazel_test.sh //tests:test_welfare //tests:test_bazel_build
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v bazel >/dev/null || [ ! -d /usr/share/bazel/rules/java ] \
    || [ ! -d /usr/share/bazel/tools/platforms ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  packages="bazel-bootstrap bazel-rules-java bazel-platforms"
  $sudo apt-get install -y -qq $packages >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq $packages >/dev/null; } \
    || { echo "bazel_test.sh: could not install $packages with apt-get" >&2; exit 1; }
fi
bash launch/setup.sh || exit 1
# Bazel's Python toolchain is .venv/bin/python (bazel/python.bzl); tests read ../shared/data.
export PATH="$PWD/.venv/bin:$PATH"
export CONSENSUS_JAX_DATA="${CONSENSUS_JAX_DATA:-$(cd .. && pwd)/shared/data}"
[ "$#" -gt 0 ] || set -- //tests/...
exec bazel test "$@"
