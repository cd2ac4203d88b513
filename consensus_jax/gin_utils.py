"""Gin for the binaries: `--gin.NAME=VALUE` overrides, search paths, and strict checks.

T5X-style command lines mix gin files and single bindings:

    python -m consensus_jax.train --gin_file=runs/sft.gin --gin_file=models/tiny.gin \
        --gin.MODEL_DIR="'/tmp/sft'" --gin.train.num_micro_batches=2

`rewrite_gin_args` turns every `--gin.NAME=VALUE` into `--gin_bindings=NAME = VALUE` before
absl parses the flags. `parse_gin` then fails loudly where gin alone would not:
  * a binding of an unknown configurable or parameter (gin's own error, naming it);
  * a command-line macro override (`--gin.TRAIN_STEPZ=5`) that no binding references: gin
    would accept it silently and the run would not change;
  * a gin file importing an objective module that does not exist yet.
"""
import pathlib
import re
from typing import Sequence

import gin

_GIN_PREFIX = "--gin."
# The project's gin_configs/ directory, searched after the user's --gin_search_paths.
DEFAULT_SEARCH_PATHS = (str(pathlib.Path(__file__).resolve().parent.parent / "gin_configs"),
                        str(pathlib.Path(__file__).resolve().parent.parent))


class UnknownGinBindingError(ValueError):
  """A command-line gin override that does not configure anything."""


class BindingError(ValueError):
  """A gin binding whose value cannot work; the message names the binding."""


def positive_int(value, binding: str, minimum: int = 1) -> int:
  """`value` if it is an integer >= minimum (not a bool, a float or a string), else a
  BindingError naming `binding` (e.g. 'TRAIN_STEPS (train.total_steps)')."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise BindingError(f"{binding} must be an integer, got {value!r} "
                       f"({type(value).__name__})")
  if value < minimum:
    raise BindingError(f"{binding} must be >= {minimum}, got {value}")
  return value


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.NAME=VALUE` -> `--gin_bindings=NAME = VALUE`; other arguments pass through."""
  rewritten = []
  for arg in argv:
    if arg.startswith(_GIN_PREFIX):
      name, equals, value = arg[len(_GIN_PREFIX):].partition("=")
      if not equals or not name:
        raise UnknownGinBindingError(f"malformed gin override {arg!r}; expected --gin.NAME=VALUE")
      rewritten.append(f"--gin_bindings={name} = {value}")
    else:
      rewritten.append(arg)
  return rewritten


def _binding_name(binding: str) -> str:
  return binding.split("=", 1)[0].strip()


def _is_macro(name: str) -> bool:
  return "." not in name and "/" not in name


def _check_macros_are_used(bindings: Sequence[str]) -> None:
  config = gin.config_str()
  unused = [name for name in map(_binding_name, bindings)
            if _is_macro(name) and not re.search(rf"%{re.escape(name)}\b", config)]
  if unused:
    raise UnknownGinBindingError(
        f"gin macro override(s) {unused} are not used by any binding in the gin files, so they "
        "would change nothing; check the spelling against the run gin's header")


def _not_implemented_objective(error: ImportError) -> Exception | None:
  missing = error if getattr(error, "name", None) else error.__context__
  name = getattr(missing, "name", None) or ""
  if name.startswith("consensus_jax.objectives."):
    kind = name.rsplit(".", 1)[1]
    return NotImplementedError(
        f"the {kind} objective is not implemented yet: module {name} does not exist, and the "
        "gin config imports it")
  return None


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str],
              gin_search_paths: Sequence[str] = (), finalize: bool = True) -> None:
  """Parses files then bindings (later ones win) with the checks in the module docstring."""
  for path in (*gin_search_paths, *DEFAULT_SEARCH_PATHS):
    gin.add_config_file_search_path(path)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                        finalize_config=False)
  except ImportError as error:
    not_implemented = _not_implemented_objective(error)
    if not_implemented is not None:
      raise not_implemented from error
    raise
  _check_macros_are_used(gin_bindings)
  if finalize:
    gin.finalize()


_MISSING = object()


def _evaluate(value):
  if isinstance(value, gin.config.ConfigurableReference):
    function = value.scoped_configurable_fn
    return function() if value.evaluate else function
  if isinstance(value, (list, tuple)):
    return type(value)(_evaluate(v) for v in value)
  if isinstance(value, dict):
    return {k: _evaluate(v) for k, v in value.items()}
  return value


def bound_value(binding: str, default=_MISSING):
  """The value a parsed gin config gives `binding` ('train.objective'), as the configurable would
  receive it: `@fn()` called, `@fn` the configured function, `%MACRO` resolved. `default` when
  nothing binds it (a BindingError naming it when no default is given). For tools that reuse a
  binary's bindings without running it, such as precompile."""
  try:
    value = gin.query_parameter(binding)
  except ValueError as error:
    if default is not _MISSING:
      return default
    raise BindingError(f"{binding} is not bound by the gin files given ({error})") from error
  value = _evaluate(value)
  if value is gin.REQUIRED:
    raise BindingError(f"{binding} is a required binding; set it in a gin file or on the "
                       "command line")
  return value


def is_bound(binding: str) -> bool:
  try:
    gin.query_parameter(binding)
  except ValueError:
    return False
  return True
