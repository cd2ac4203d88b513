"""polis.py and polis_examples.py on the real conversations, and on corrupted copies."""
import csv
import dataclasses
import shutil

import numpy as np
import pytest

from consensus_jax.data import polis
from consensus_jax.data import polis_examples
from consensus_jax.data import polis_votes
from consensus_jax.data.errors import DataError

SMALL = ("15-per-hour-seattle", "london.youth.policing")


@pytest.fixture(scope="module")
def polis_root(shared_data_dir):
  return shared_data_dir / "polis"


@pytest.fixture(scope="module")
def conversations(polis_root):
  return polis.load_all(polis_root)


def _counts_from_csv(folder):
  """Counts computed cell by cell from participants-votes.csv, independently of polis.py."""
  with open(folder / "participants-votes.csv", newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = next(reader)
    vote_columns = [j for j, name in enumerate(header) if name.isdigit()]
    rows = list(reader)
  cells = [row[j] for row in rows for j in vote_columns]
  with open(folder / "comments.csv", newline="", encoding="utf-8") as f:
    num_comments = sum(1 for _ in csv.DictReader(f))
  return {"participants": len(rows), "vote_columns": len(vote_columns),
          "comments": num_comments, "votes": sum(c != "" for c in cells),
          "agree": cells.count("1"), "disagree": cells.count("-1"), "pass": cells.count("0"),
          "row_n_votes": [int(row[header.index("n-votes")]) for row in rows]}


@pytest.mark.parametrize("name", SMALL)
def test_counts_match_the_csv_files(polis_root, name):
  conversation = polis.load_conversation(polis_root / name)
  expected = _counts_from_csv(polis_root / name)
  assert len(conversation.participant_ids) == expected["participants"]
  assert len(conversation.comment_ids) == expected["vote_columns"]
  assert len(conversation.comments) == expected["comments"]
  assert conversation.votes_PC.shape == conversation.seen_PC.shape == (
      expected["participants"], expected["vote_columns"])
  assert conversation.num_votes == expected["votes"]
  assert int((conversation.votes_PC == polis.AGREE).sum()) == expected["agree"]
  assert int((conversation.votes_PC == polis.DISAGREE).sum()) == expected["disagree"]
  assert int((conversation.seen_PC & (conversation.votes_PC == 0)).sum()) == expected["pass"]
  assert conversation.seen_PC.sum(1).tolist() == expected["row_n_votes"]


def test_matrix_order_follows_the_file(polis_root):
  conversation = polis.load_conversation(polis_root / "london.youth.policing")
  assert conversation.topic.startswith("What is the best way to engage more young people")
  assert conversation.comment_ids[:3].tolist() == [1, 4, 5]
  # Participant 1's row begins -1,1,-1 (see the file); not-seen cells are 0 and unseen.
  p = int(np.flatnonzero(conversation.participant_ids == 1)[0])
  assert conversation.votes_PC[p, :3].tolist() == [-1, 1, -1]
  assert not conversation.seen_PC[p, -1]
  rejected = [c for c in conversation.comments.values() if c.moderated == -1]
  assert rejected and not any(c.is_candidate for c in rejected)


def test_every_conversation_loads(conversations):
  assert len(conversations) == 11
  for name, conversation in conversations.items():
    assert conversation.num_votes > 0, name
    assert set(conversation.comment_ids.tolist()) <= set(conversation.comments), name
  assert conversations["vtaiwan.uberx"].topic.startswith("UberX 自用車載客")
  assert sum(c.is_self_description for c in conversations["vtaiwan.uberx"].comments.values())


@pytest.mark.parametrize("text,expected", [
    ("I am 30 years of age or older but less than 55", True),
    ("I live in a town", True),
    ("My ethnicity is White.", True),
    ("I identify as female.", True),
    ("我是計程車司機。", True),
    ("I am grateful for the Land Bank.", False),
    ("I am worried about security issues with online voting.", False),
    ("Businesses shouldn't be able to pay workers below a livable wage.", False),
    ("I live in fear that the police should do more about crime in my area every day.", False),
])
def test_self_description_heuristic(text, expected):
  assert polis.is_self_description(text) == expected


def _copy(polis_root, tmp_path, name="london.youth.policing"):
  folder = tmp_path / name
  shutil.copytree(polis_root / name, folder)
  for path in folder.iterdir():
    path.chmod(0o644)  # the shared copy is read-only
  return folder


def _rewrite(path, edit):
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  edit(rows)
  with open(path, "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows(rows)


def test_missing_file_is_named(polis_root, tmp_path):
  folder = _copy(polis_root, tmp_path)
  (folder / "comments.csv").unlink()
  with pytest.raises(DataError, match=r"comments\.csv: missing file"):
    polis.load_conversation(folder)


def test_vote_for_unknown_comment_is_located(polis_root, tmp_path):
  folder = _copy(polis_root, tmp_path)
  def add_column(rows):
    rows[0].append("999")
    for row in rows[1:]:
      row.append("1")
  _rewrite(folder / "participants-votes.csv", add_column)
  with pytest.raises(DataError,
                     match=r"participants-votes\.csv: line 1 \(header\), column 44: .*unknown "
                           r"comment 999"):
    polis.load_conversation(folder)


def test_vote_value_out_of_range_is_located(polis_root, tmp_path):
  folder = _copy(polis_root, tmp_path)
  def corrupt(rows):
    rows[5][7] = "2"  # row 5, first vote column (comment 1)
  _rewrite(folder / "participants-votes.csv", corrupt)
  with pytest.raises(DataError, match=r"participants-votes\.csv: row 5 \(line 6, "
                                      r"participant 5\), comment 1: vote '2'"):
    polis.load_conversation(folder)


def test_malformed_comment_row_is_located(polis_root, tmp_path):
  folder = _copy(polis_root, tmp_path)
  _rewrite(folder / "comments.csv", lambda rows: rows[3].__setitem__(6, "maybe"))
  with pytest.raises(DataError, match=r"comments\.csv: row 3 \(line 4\): column 'moderated'"):
    polis.load_conversation(folder)
  folder = _copy(polis_root, tmp_path / "b")
  _rewrite(folder / "participants-votes.csv", lambda rows: rows[2].pop())
  with pytest.raises(DataError, match=r"participants-votes\.csv: row 2 \(line 3\): 42 fields"):
    polis.load_conversation(folder)


def test_header_faults_that_would_lose_or_double_votes_are_located(polis_root, tmp_path):
  folder = _copy(polis_root, tmp_path / "renamed")
  # A comment column renamed to a non-number before the others: not silently metadata.
  _rewrite(folder / "participants-votes.csv", lambda rows: rows[0].__setitem__(7, "c1"))
  with pytest.raises(DataError, match=r"column 8: 'c1' is neither a comment id nor a metadata"):
    polis.load_conversation(folder)
  folder = _copy(polis_root, tmp_path / "twice")
  def duplicate_column(rows):
    rows[0].append(rows[0][7])
    for row in rows[1:]:
      row.append(row[7])
  _rewrite(folder / "participants-votes.csv", duplicate_column)
  with pytest.raises(DataError, match=r"column 44: comment 1 already has column 8"):
    polis.load_conversation(folder)


def test_bad_bytes_and_empty_comments(polis_root, tmp_path):
  folder = _copy(polis_root, tmp_path / "bytes")
  raw = (folder / "comments.csv").read_bytes().split(b"\n")
  raw[3] = raw[3] + b"\xff"
  (folder / "comments.csv").write_bytes(b"\n".join(raw))
  with pytest.raises(DataError, match=r"comments\.csv: line 4: not UTF-8 text"):
    polis.load_conversation(folder)
  folder = _copy(polis_root, tmp_path / "empty")
  _rewrite(folder / "comments.csv", lambda rows: rows[2].__setitem__(rows[0].index(
      "comment-body"), "   "))
  conversation = polis.load_conversation(folder)
  empty = [c for c in conversation.comments.values() if not c.text]
  assert len(empty) == 1 and not empty[0].is_candidate


def test_vote_examples_use_only_other_votes(conversations):
  conversation = conversations["15-per-hour-seattle"]
  examples = list(polis_examples.vote_examples(conversation, pass_weight=0.25))
  assert examples
  by_text = {" ".join(c.text.split()): c for c in conversation.comments.values()}
  by_key = {(e.participant_id, e.comment_id): e for e in examples}
  assert len(by_key) == len(examples)
  for example in examples[:300]:
    p = int(np.flatnonzero(conversation.participant_ids == example.participant_id)[0])
    c = conversation.column_of(example.comment_id)
    assert conversation.seen_PC[p, c] and conversation.votes_PC[p, c] == example.vote
    assert example.label == {1: 1.0, -1: 0.0, 0: 0.5}[example.vote]
    assert example.weight == (0.25 if example.vote == 0 else 1.0)
    assert example.candidate not in example.prefix  # the target's own vote never leaks
    for line in example.prefix.splitlines()[1:]:
      if line.startswith("I agree with "):  # the member's agree share over their other votes
        others_C = np.delete(conversation.votes_PC[p] * conversation.seen_PC[p], c)
        candidates_C = np.delete(np.array([conversation.comments[int(i)].is_candidate
                                           for i in conversation.comment_ids]), c)
        agree, disagree = ((others_C == 1) & candidates_C).sum(), ((others_C == -1) & candidates_C).sum()
        share = (agree + 1) / (agree + disagree + 2)
        assert line == f"I agree with {int(round(20 * share))} in 20 statements."
        continue
      stance, text = line.split(": ", 1)
      other = by_text[text]
      assert other.id != example.comment_id
      vote = conversation.votes_PC[p, conversation.column_of(other.id)]
      assert vote == {"I agree": 1, "I disagree": -1}[stance]
  assert any("I disagree" in e.prefix for e in examples)
  votes = np.array([e.vote for e in examples])
  assert (votes == 1).any() and (votes == -1).any() and (votes == 0).any()


def test_member_context_is_the_votes_most_like_the_target():
  """Of a member's other votes the prefix shows those whose words are most like the target's,
  most similar first, never the target's own, and the same for every draw of the tie-breaks."""
  texts = ["Build more bike lanes downtown", "Downtown bike lanes are dangerous to walkers",
           "Protected bike lanes downtown now", "Lower the property tax",
           "Fund the public library", "Raise the parking fees", "Plant trees in parks",
           "Bike lanes near schools"]
  votes_1C = np.array([[1, -1, 1, 1, 1, -1, -1, 1]], np.int8)
  comments = {c: polis.Comment(c, t, 0, 1, False) for c, t in enumerate(texts)}
  conversation = polis.Conversation("lanes", "Town", "", comments, np.array([7]),
                                    np.arange(len(texts)), votes_1C, votes_1C != 0)
  table = polis_votes.VoteTable(conversation)
  for seed in range(5):
    prefix, usable = polis_examples.member_prefix(
        conversation, table, 0, np.array([0]), 0, np.random.default_rng(seed),
        max_agreed=2, max_disagreed=1)
    assert usable == 7
    # cosine with the target: 0.60, 0.45 (agreed), 0.51 (disagreed); one list, most alike first
    assert prefix.splitlines()[-3:] == ["I agree: Protected bike lanes downtown now",
                                        "I disagree: Downtown bike lanes are dangerous to walkers",
                                        "I agree: Bike lanes near schools"]
    assert texts[0] not in prefix


def test_existing_statement_examples_summarise_others_only(conversations):
  conversation = conversations["15-per-hour-seattle"]
  split = polis_examples.split_participants(conversation, heldout_fraction=0.2)
  member = int(split["heldout"][0])
  row = int(np.flatnonzero(conversation.participant_ids == member)[0])
  examples = list(polis_examples.vote_examples(conversation, [member], others=split["train"],
                                               existing_share=1.0, min_context_votes=0))
  assert examples and all(e.existing for e in examples)
  train_rows = np.flatnonzero(np.isin(conversation.participant_ids, split["train"]))
  for example in examples:
    c = conversation.column_of(example.comment_id)
    votes_P = conversation.votes_PC[train_rows, c] * conversation.seen_PC[train_rows, c]
    everyone = ((votes_P == 1).sum() + 1) / ((votes_P != 0).sum() + 2)
    assert example.candidate.startswith(f"Everyone: {int(round(20 * everyone))} in 20 agree. "
                                        "People like me: ")
    assert example.candidate.endswith(" ".join(conversation.comments[example.comment_id]
                                               .text.split()))
  # The member's own vote on a target never reaches that target's summary (the rest of their
  # votes may: they say who votes like them).
  changed = 0
  for t, example in enumerate(examples[:6]):
    c = conversation.column_of(example.comment_id)
    flipped = dataclasses.replace(conversation, votes_PC=conversation.votes_PC.copy())
    flipped.votes_PC[row, c] = 1 if flipped.votes_PC[row, c] != 1 else -1
    again = list(polis_examples.vote_examples(flipped, [member], others=split["train"],
                                              existing_share=1.0, min_context_votes=0))
    assert again[t].candidate == example.candidate
    changed += again[t].label != example.label
  assert changed == 6
  new = list(polis_examples.vote_examples(conversation, [member], min_context_votes=0))
  assert not any(e.existing or "Everyone:" in e.candidate for e in new)


def test_heldout_participants_are_disjoint_and_deterministic(conversations):
  conversation = conversations["15-per-hour-seattle"]
  split = polis_examples.split_participants(conversation, heldout_fraction=0.2)
  again = polis_examples.split_participants(conversation, heldout_fraction=0.2)
  assert not set(split["train"]) & set(split["heldout"])
  assert len(split["train"]) + len(split["heldout"]) == len(conversation.participant_ids)
  assert len(split["heldout"]) == round(0.2 * len(conversation.participant_ids))
  assert np.array_equal(split["heldout"], again["heldout"])
  heldout = list(polis_examples.vote_examples(conversation, split["heldout"]))
  assert heldout and {e.participant_id for e in heldout} <= set(split["heldout"].tolist())


def test_selection_group_members_voted_on_every_candidate(conversations):
  conversation = conversations["15-per-hour-seattle"]
  groups = polis_examples.selection_groups(conversation, num_groups=30, num_candidates=4,
                                           group_size=5)
  assert len(groups) == 30
  assert len({(g.comment_ids, g.participant_ids) for g in groups}) == 30
  for group in groups:
    rows = [int(np.flatnonzero(conversation.participant_ids == p)[0])
            for p in group.participant_ids]
    cols = [conversation.column_of(c) for c in group.comment_ids]
    assert conversation.seen_PC[np.ix_(rows, cols)].all()
    assert np.array_equal(group.votes_MC, conversation.votes_PC[np.ix_(rows, cols)])
    assert all(conversation.comments[c].is_candidate for c in group.comment_ids)
