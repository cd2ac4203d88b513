"""Reward-model examples and selection groups built from a Polis conversation's real votes.

RM example: predict a member's vote on one statement from their votes on OTHER statements
(a few they agreed and disagreed with, plus self-descriptions they agreed with, rendered by
prompts.polis_rm_prefix). Held-out participants ("a new person on a known topic") come from a
deterministic per-conversation split.

Selection group: a candidate set of statements and members who voted on every one of them,
so a selection rule can be scored against the members' real votes.
"""
import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np

from consensus_jax.data import polis
from consensus_jax.data import prompts

VOTE_LABELS = {polis.AGREE: 1.0, polis.DISAGREE: 0.0, polis.PASS: 0.5}


@dataclasses.dataclass(frozen=True)
class VoteExample:
  conversation: str
  participant_id: int
  comment_id: int
  prefix: str  # prompts.polis_rm_prefix: the member's other votes
  candidate: str  # the statement voted on
  vote: int  # 1 agree, -1 disagree, 0 pass
  label: float  # 1.0 agree, 0.0 disagree, 0.5 pass
  weight: float  # 1.0, or pass_weight for a pass


@dataclasses.dataclass(frozen=True)
class SelectionGroup:
  conversation: str
  comment_ids: tuple[int, ...]  # the candidate statements
  participant_ids: tuple[int, ...]  # members who voted on all of them
  votes_MC: np.ndarray  # int8 [members, candidates]: 1 agree, -1 disagree, 0 pass


def _conversation_rng(conversation: polis.Conversation, seed: int, *extra: int):
  return np.random.default_rng([seed, zlib.crc32(conversation.name.encode()), *extra])


def split_participants(conversation: polis.Conversation, heldout_fraction: float = 0.2,
                       seed: int = 0) -> dict[str, np.ndarray]:
  """{'train': ids, 'heldout': ids}, a fixed random split of the conversation's participants."""
  order = _conversation_rng(conversation, seed).permutation(len(conversation.participant_ids))
  num_heldout = int(round(heldout_fraction * len(order)))
  return {"train": np.sort(conversation.participant_ids[order[num_heldout:]]),
          "heldout": np.sort(conversation.participant_ids[order[:num_heldout]])}


def _texts(conversation: polis.Conversation, columns) -> list[str]:
  return [conversation.comments[int(conversation.comment_ids[c])].text for c in columns]


def vote_examples(conversation: polis.Conversation, participant_ids=None, *,
                  max_agreed: int = 3, max_disagreed: int = 3, max_about_me: int = 3,
                  min_context_votes: int = 2, pass_weight: float = 0.0,
                  seed: int = 0) -> Iterator[VoteExample]:
  """One example per (member, candidate statement) vote, in matrix order.

  Members with fewer than `min_context_votes` agree/disagree votes besides the target are
  skipped: there is nothing to personalise on. Passes are kept with weight `pass_weight`.
  """
  candidate_C = np.array([conversation.comments[int(c)].is_candidate
                          for c in conversation.comment_ids])
  about_me_C = np.array([conversation.comments[int(c)].is_self_description
                         for c in conversation.comment_ids])
  wanted = None if participant_ids is None else set(int(p) for p in participant_ids)
  for p, participant_id in enumerate(conversation.participant_ids):
    if wanted is not None and int(participant_id) not in wanted:
      continue
    seen_C, votes_C = conversation.seen_PC[p], conversation.votes_PC[p]
    agreed = np.flatnonzero(seen_C & (votes_C == polis.AGREE) & candidate_C)
    disagreed = np.flatnonzero(seen_C & (votes_C == polis.DISAGREE) & candidate_C)
    about_me = np.flatnonzero(seen_C & (votes_C == polis.AGREE) & about_me_C)[:max_about_me]
    rng = _conversation_rng(conversation, seed, p)
    for target in np.flatnonzero(seen_C & candidate_C):
      other_agreed = rng.permutation(agreed[agreed != target])[:max_agreed]
      other_disagreed = rng.permutation(disagreed[disagreed != target])[:max_disagreed]
      if len(other_agreed) + len(other_disagreed) < min_context_votes:
        continue
      vote = int(votes_C[target])
      comment_id = int(conversation.comment_ids[target])
      yield VoteExample(
          conversation=conversation.name, participant_id=int(participant_id),
          comment_id=comment_id,
          prefix=prompts.polis_rm_prefix(
              conversation.topic, _texts(conversation, np.sort(other_agreed)),
              _texts(conversation, np.sort(other_disagreed)), _texts(conversation, about_me)),
          candidate=conversation.comments[comment_id].text, vote=vote,
          label=VOTE_LABELS[vote], weight=pass_weight if vote == polis.PASS else 1.0)


def selection_groups(conversation: polis.Conversation, *, num_groups: int,
                     num_candidates: int = 4, group_size: int = 4, seed: int = 0,
                     max_attempts_per_group: int = 20) -> list[SelectionGroup]:
  """Up to `num_groups` distinct (candidate set, members who voted on every candidate) pairs.

  Grows each candidate set greedily from a random statement, each step choosing at random
  among the five statements most often seen by the members still qualifying.
  """
  rng = _conversation_rng(conversation, seed, 1)
  candidate_C = np.array([conversation.comments[int(c)].is_candidate
                          for c in conversation.comment_ids])
  seen_PC = conversation.seen_PC & candidate_C[None, :]
  starts = np.flatnonzero(seen_PC.sum(0) >= group_size)
  groups, keys = [], set()
  for _ in range(num_groups * max_attempts_per_group):
    if len(groups) == num_groups or not len(starts):
      break
    chosen = [int(rng.choice(starts))]
    voters = seen_PC[:, chosen[0]]
    while len(chosen) < num_candidates:
      co_seen_C = seen_PC[voters].sum(0)
      co_seen_C[chosen] = -1
      best = np.argsort(-co_seen_C, kind="stable")[:5]
      best = best[co_seen_C[best] >= group_size]
      if not len(best):
        break
      chosen.append(int(rng.choice(best)))
      voters = voters & seen_PC[:, chosen[-1]]
    if len(chosen) < num_candidates:
      continue
    members = np.sort(rng.choice(np.flatnonzero(voters), group_size, replace=False))
    columns = np.sort(chosen)
    key = (tuple(columns), tuple(members))
    if key in keys:
      continue
    keys.add(key)
    groups.append(SelectionGroup(
        conversation=conversation.name,
        comment_ids=tuple(int(c) for c in conversation.comment_ids[columns]),
        participant_ids=tuple(int(p) for p in conversation.participant_ids[members]),
        votes_MC=conversation.votes_PC[np.ix_(members, columns)].copy()))
  return groups
