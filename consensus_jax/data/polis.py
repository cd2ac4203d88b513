"""Loads a Polis open-data conversation: topic, comments and the participants x comments votes.

A conversation folder holds summary.csv (key,value rows: topic, conversation-description, ...),
comments.csv (comment-id, author-id, moderated, comment-body, ...) and participants-votes.csv
(one row per participant: metadata columns such as participant, xid, group-id, n-votes, then
one column per comment id holding 1 agree, -1 disagree, 0 pass, empty = not seen). votes.csv,
the raw log, is not needed. Comments with moderated = -1 were rejected by the moderators; they
keep their votes but are not offered as candidates.
"""
import csv
import dataclasses
import io
import os
import pathlib
import re

import numpy as np

from consensus_jax.data import paths
from consensus_jax.data.errors import DataError

TRAIN_CONVERSATIONS = (
    "american-assembly.bowling-green", "scoop-hivemind.biodiversity",
    "scoop-hivemind.affordable-housing", "ssis.land-bank-farmland.2rumnecbeh.2021-08-01",
    "football-concussions", "bg2050-volunteers", "15-per-hour-seattle", "london.youth.policing",
    "vtaiwan.uberx")
VALIDATION_CONVERSATIONS = ("canadian-electoral-reform", "scoop-hivemind.freshwater")

AGREE, PASS, DISAGREE = 1, 0, -1
_VOTE_CODES = {"1": AGREE, "0": PASS, "-1": DISAGREE}
_COMMENT_COLUMNS = ("comment-id", "author-id", "moderated", "comment-body")
_PARTICIPANT_COLUMN = "participant"
# The export's per-participant columns; every other column must be a comment id.
METADATA_COLUMNS = ("participant", "xid", "group-id", "n-comments", "n-votes", "n-agree",
                    "n-disagree")

# Self-descriptions ("I am 30-55", "I live in a town", "My ethnicity is ...") describe the
# voter rather than propose something to agree with.
_SELF_DESCRIPTION_EN = re.compile(
    r"^(i am|i'm|im) (\d|between|under|over|aged|a |an |of \w+ descent|employed|female|male|"
    r"retired|eligible|a student)"
    r"|^i (live|work|own|rent|have lived|identify as|was born|have dependents|have children)\b"
    r"|^my (ethnicity|gender|household income|age|primary residence|income) ")
_OPINION_WORDS = re.compile(
    r"\b(should|must|think|believe|feel|want|need|hope|worried|concerned|pleased|grateful|"
    r"unsure|like|love|hate|agree|disagree)\b|\?")
_SELF_DESCRIPTION_ZH = re.compile(r"^(我是|我住在|我在.{0,6}工作)")
_MAX_SELF_DESCRIPTION_WORDS = 20
_MAX_SELF_DESCRIPTION_CHARS_ZH = 16


def is_self_description(text: str) -> bool:
  """Heuristic: a short first-person statement of who the voter is, not an opinion."""
  text = " ".join(text.split())
  lowered = text.lower()
  if _SELF_DESCRIPTION_ZH.match(text):
    return len(text) <= _MAX_SELF_DESCRIPTION_CHARS_ZH
  return bool(_SELF_DESCRIPTION_EN.match(lowered)) and not _OPINION_WORDS.search(lowered) and (
      len(lowered.split()) <= _MAX_SELF_DESCRIPTION_WORDS)


@dataclasses.dataclass(frozen=True)
class Comment:
  id: int
  text: str
  author_id: int
  moderated: int  # -1 rejected, 0 unmoderated, 1 accepted
  is_self_description: bool

  @property
  def is_candidate(self) -> bool:
    """Offered to the RM and the selection step as a statement to agree with."""
    return self.moderated != -1 and bool(self.text) and not self.is_self_description


@dataclasses.dataclass(frozen=True)
class Conversation:
  name: str
  topic: str
  description: str
  comments: dict[int, Comment]  # every comment in comments.csv, by id
  participant_ids: np.ndarray  # int64 [P], the rows of votes_PC
  comment_ids: np.ndarray  # int64 [C], the columns of votes_PC
  votes_PC: np.ndarray  # int8: 1 agree, -1 disagree, 0 pass or not seen
  seen_PC: np.ndarray  # bool: the participant voted (agree, disagree or pass)

  @property
  def num_votes(self) -> int:
    return int(self.seen_PC.sum())

  def column_of(self, comment_id: int) -> int:
    return int(np.flatnonzero(self.comment_ids == comment_id)[0])


def _open_csv(path: pathlib.Path) -> io.StringIO:
  """The file's text, decoded up front so bad bytes are a DataError naming file and line."""
  if not path.is_file():
    raise DataError(f"{path}: missing file")
  raw = path.read_bytes()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise DataError(f"{path}: line {line}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r})"
                    ) from None
  return io.StringIO(text, newline="")


def _integer(value: str, path: pathlib.Path, where: str, column: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise DataError(f"{path}: {where}: column '{column}' is not an integer: {value!r}") from None


def _read_summary(path: pathlib.Path) -> dict[str, str]:
  with _open_csv(path) as f:
    summary = {row[0]: row[1] if len(row) > 1 else "" for row in csv.reader(f) if row}
  if not summary.get("topic", "").strip():
    raise DataError(f"{path}: no 'topic' row")
  return summary


def _read_comments(path: pathlib.Path) -> dict[int, Comment]:
  comments = {}
  with _open_csv(path) as f:
    reader = csv.DictReader(f)
    missing = [c for c in _COMMENT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
      raise DataError(f"{path}: line 1 (header): missing column(s) {missing}")
    for row_number, row in enumerate(reader, start=1):
      where = f"row {row_number} (line {reader.line_num})"
      if None in row or any(row[c] is None for c in _COMMENT_COLUMNS):
        raise DataError(f"{path}: {where}: wrong number of fields")
      comment_id = _integer(row["comment-id"], path, where, "comment-id")
      moderated = _integer(row["moderated"], path, where, "moderated")
      if moderated not in (-1, 0, 1):
        raise DataError(f"{path}: {where}: moderated must be -1, 0 or 1, got {moderated}")
      if comment_id in comments:
        raise DataError(f"{path}: {where}: duplicate comment-id {comment_id}")
      text = row["comment-body"].strip()
      comments[comment_id] = Comment(
          id=comment_id, text=text,
          author_id=_integer(row["author-id"], path, where, "author-id"),
          moderated=moderated, is_self_description=is_self_description(text))
  return comments


def _read_votes(path: pathlib.Path, comments: dict[int, Comment]):
  with _open_csv(path) as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header or header[0] != _PARTICIPANT_COLUMN:
      raise DataError(f"{path}: line 1 (header): first column must be '{_PARTICIPANT_COLUMN}'")
    # Metadata columns (METADATA_COLUMNS) come first, then one column per comment id. A name
    # that is neither is an error: taking it for metadata would drop a comment's votes unseen.
    first_vote_column = next((j for j, name in enumerate(header)
                              if name.strip() not in METADATA_COLUMNS), len(header))
    comment_ids, column_of = [], {}
    for j, name in enumerate(header[first_vote_column:], start=first_vote_column):
      if not name.strip().isdigit():
        raise DataError(f"{path}: line 1 (header), column {j + 1}: {name!r} is neither a comment "
                        f"id nor a metadata column ({', '.join(METADATA_COLUMNS)})")
      comment_id = int(name)
      if comment_id not in comments:
        raise DataError(f"{path}: line 1 (header), column {j + 1}: votes for unknown comment "
                        f"{name} (not in comments.csv)")
      if comment_id in column_of:
        raise DataError(f"{path}: line 1 (header), column {j + 1}: comment {comment_id} already "
                        f"has column {column_of[comment_id] + 1}; its votes would count twice")
      column_of[comment_id] = j
      comment_ids.append(comment_id)
    participant_ids, cells, line_numbers = [], [], []
    for row_number, row in enumerate(reader, start=1):
      where = f"row {row_number} (line {reader.line_num})"
      if len(row) != len(header):
        raise DataError(f"{path}: {where}: {len(row)} fields, header has {len(header)}")
      participant_ids.append(_integer(row[0], path, where, _PARTICIPANT_COLUMN))
      cells.append(row[first_vote_column:])
      line_numbers.append(reader.line_num)
  cells_PC = np.array(cells, dtype=str).reshape(len(cells), len(comment_ids))
  seen_PC = cells_PC != ""
  votes_PC = np.zeros(cells_PC.shape, np.int8)
  for code, vote in _VOTE_CODES.items():
    votes_PC[cells_PC == code] = vote
  invalid = seen_PC & ~np.isin(cells_PC, list(_VOTE_CODES))
  if invalid.any():
    p, c = (int(i) for i in np.argwhere(invalid)[0])
    raise DataError(f"{path}: row {p + 1} (line {line_numbers[p]}, participant "
                    f"{participant_ids[p]}), comment {comment_ids[c]}: vote "
                    f"{str(cells_PC[p, c])!r} is not 1, 0, -1 or empty")
  if len(set(participant_ids)) != len(participant_ids):
    duplicate = next(p for i, p in enumerate(participant_ids) if p in participant_ids[:i])
    raise DataError(f"{path}: participant {duplicate} appears on more than one row")
  return np.array(participant_ids, np.int64), np.array(comment_ids, np.int64), votes_PC, seen_PC


def load_conversation(path: str | os.PathLike) -> Conversation:
  """Reads one conversation folder; DataError names the file and row of any fault."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise DataError(f"{path}: not a conversation folder")
  summary = _read_summary(path / "summary.csv")
  comments = _read_comments(path / "comments.csv")
  participant_ids, comment_ids, votes_PC, seen_PC = _read_votes(
      path / "participants-votes.csv", comments)
  return Conversation(
      name=path.name, topic=summary["topic"].strip(),
      description=summary.get("conversation-description", "").strip(), comments=comments,
      participant_ids=participant_ids, comment_ids=comment_ids, votes_PC=votes_PC,
      seen_PC=seen_PC)


def conversation_names(polis_dir: str | os.PathLike | None = None) -> list[str]:
  root = pathlib.Path(polis_dir) if polis_dir is not None else paths.polis_dir()
  return sorted(p.name for p in root.iterdir() if p.is_dir())


def existing_conversation_names(polis_dir: str | os.PathLike, what: str) -> list[str]:
  """The conversation folders in `polis_dir` (named by `what` in errors); at least one."""
  root = pathlib.Path(polis_dir)
  if not root.is_dir():
    raise DataError(f"{what}: {root} is not a directory")
  names = conversation_names(root)
  if not names:
    raise DataError(f"{what}: {root} holds no Polis conversation folders (each holds "
                    "comments.csv and participants-votes.csv)")
  return names


def folds(names, num_folds: int) -> list[list[str]]:
  """Conversations in folds for leave-conversations-out evaluation: sorted by name, the i-th
  to fold i % num_folds."""
  ordered = sorted(names)
  return [ordered[f::num_folds] for f in range(min(num_folds, len(ordered)))]


def load_all(polis_dir: str | os.PathLike | None = None) -> dict[str, Conversation]:
  root = pathlib.Path(polis_dir) if polis_dir is not None else paths.polis_dir()
  return {name: load_conversation(root / name) for name in conversation_names(root)}
