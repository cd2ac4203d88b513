"""Where the bundled data lives: ../shared/data beside the checkout, or $CONSENSUS_JAX_DATA."""
import os
import pathlib

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def shared_data_dir() -> pathlib.Path:
  override = os.environ.get("CONSENSUS_JAX_DATA")
  path = pathlib.Path(override) if override else _REPO_ROOT.parent / "shared" / "data"
  if not (path / "questions" / "questions.json").is_file():
    raise FileNotFoundError(
        f"bundled data not found at {path} (expected questions/questions.json there); "
        "put ../shared beside the checkout or set CONSENSUS_JAX_DATA")
  return path


def questions_path() -> pathlib.Path:
  return shared_data_dir() / "questions" / "questions.json"


def polis_dir() -> pathlib.Path:
  return shared_data_dir() / "polis"
