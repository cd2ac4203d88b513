#!/usr/bin/env bash
# Creates .venv (Python 3.11) beside the checkout and installs consensus_jax with the hf, test and
# tpu extras (libtpu: TPU programs compiled ahead of time on this host, by precompile). Safe to
# run again: an up-to-date environment is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.installed-$(cat setup.py launch/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e '.[hf,test,tpu]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
