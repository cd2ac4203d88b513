"""The BUILD files match the imports, and the generator finds what Bazel needs to know."""
import textwrap

import pytest

from bazel import write_build_files as wbf


def test_build_files_are_current():
  stale = [path for path, text in wbf.build_files().items()
           if not (wbf.ROOT / path).is_file() or (wbf.ROOT / path).read_text() != text]
  assert not stale, f"run python bazel/write_build_files.py: stale {stale}"


def test_every_test_file_and_binary_has_a_target():
  files = wbf.build_files()
  tests = sorted(p.stem for p in (wbf.ROOT / "tests").glob("test_*.py"))
  for name in tests:
    assert f'name = "{name}",' in files["tests/BUILD"]
  for binary in ("train", "eval", "infer", "collect", "convert_hf"):
    assert f'py_binary(\n    name = "{binary}",' in files["consensus_jax/BUILD"]


def test_function_local_imports_and_subprocess_modules_are_dependencies(tmp_path):
  source = tmp_path / "test_example.py"
  source.write_text(textwrap.dedent("""
      import os
      from consensus_jax.models import config, decoder

      def run():
        from consensus_jax import welfare
        return ["python", "-m", "consensus_jax.train", "--flag"]
  """))
  known = {"consensus_jax", "consensus_jax.models", "consensus_jax.models.config",
           "consensus_jax.models.decoder", "consensus_jax.welfare", "consensus_jax.train"}
  assert wbf.imported_modules(source, known) == {
      "consensus_jax", "consensus_jax.models", "consensus_jax.models.config", "consensus_jax.models.decoder",
      "consensus_jax.welfare", "consensus_jax.train"}


def test_relative_imports_are_refused(tmp_path):
  source = tmp_path / "module.py"
  source.write_text("from . import sibling\n")
  with pytest.raises(wbf.BuildGraphError, match="relative import"):
    wbf.imported_modules(source, set())


def test_a_cycle_is_named():
  graph = {"//a:x": {"//b:y"}, "//b:y": {"//c:z"}, "//c:z": {"//a:x"}, "//d:w": set()}
  with pytest.raises(wbf.BuildGraphError, match=r"//a:x -> //b:y -> //c:z -> //a:x"):
    wbf.check_acyclic(graph)
  wbf.check_acyclic({"//a:x": {"//b:y"}, "//b:y": set()})
