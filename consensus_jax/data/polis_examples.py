"""Reward-model examples and selection groups built from a Polis conversation's real votes.

RM example: predict a member's vote on one statement from their votes on OTHER statements
(the few they agreed and disagreed with that are most like it, their agree share, plus
self-descriptions they agreed with, rendered by prompts.polis_rm_prefix). Two modes
(prompts.polis_rm_candidate):
  new statement       nobody has voted on the candidate: the statement's text alone;
  existing statement  the candidate also carries how other participants voted on it (everyone,
                      and the ones who vote most like the member; polis_votes.summarise), from
                      `others` only, which never holds the member.
Held-out participants ("a new person on a known topic") come from a deterministic
per-conversation split.

Selection group: a candidate set of statements and members who voted on every one of them,
so a selection rule can be scored against the members' real votes.
"""
import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np

from consensus_jax.data import polis
from consensus_jax.data import polis_votes
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
  existing: bool = False  # the candidate carries others' votes on it (existing-statement mode)


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


def member_prefix(conversation: polis.Conversation, table: polis_votes.VoteTable, row: int,
                  excluded_C: np.ndarray, like: int, rng: np.random.Generator, *,
                  max_agreed: int = 3, max_disagreed: int = 3,
                  max_about_me: int = 3) -> tuple[str, int]:
  """The RM's member prefix for participant row `row`, written for the statement in column
  `like`, from their votes on every candidate statement except the `excluded_C` columns (the
  target, or a selection's whole candidate set): the `max_agreed` they agreed with and the
  `max_disagreed` they disagreed with whose words are most like `like`'s (table.similarity_CC;
  ties in random order), all in one list, most similar first; their agree share;
  self-descriptions they agreed with. Returns (prefix, the number of agree / disagree votes it
  could draw on).

  Why the most similar, and first: the votes that speak to the statement are the ones that
  predict the member's vote on it, and most prefixes are longer than the RM's 160 input tokens,
  which cut the end. By text alone, the few most similar votes say more than all of them
  (the text_nearest peer against text_similarity in studies/polis_peers), and more than a random
  few (README, "Real votes")."""
  seen_C, votes_C = conversation.seen_PC[row], conversation.votes_PC[row]
  usable_C = seen_C & table.candidate_C
  usable_C[np.asarray(excluded_C, np.int64)] = False
  agreed = np.flatnonzero(usable_C & (votes_C == polis.AGREE))
  disagreed = np.flatnonzero(usable_C & (votes_C == polis.DISAGREE))
  about_me = np.flatnonzero(seen_C & (votes_C == polis.AGREE) & table.about_me_C)[:max_about_me]
  similarity_C = table.similarity_CC[int(like)]
  share = (len(agreed) + 1) / (len(agreed) + len(disagreed) + 2)  # as VoteTable.member_rate_loo
  chosen = np.concatenate([_most_similar(agreed, similarity_C, max_agreed, rng),
                           _most_similar(disagreed, similarity_C, max_disagreed, rng)])
  chosen = chosen[np.argsort(-similarity_C[chosen], kind="stable")]
  prefix = prompts.polis_rm_prefix(
      conversation.topic, [(text, bool(votes_C[c] == polis.AGREE))
                           for c, text in zip(chosen, _texts(conversation, chosen))],
      _texts(conversation, about_me), member_agree_share=share)
  return prefix, len(agreed) + len(disagreed)


def _most_similar(columns: np.ndarray, similarity_C: np.ndarray, count: int,
                  rng: np.random.Generator) -> np.ndarray:
  shuffled = rng.permutation(columns)
  return shuffled[np.argsort(-similarity_C[shuffled], kind="stable")[:count]]


def vote_examples(conversation: polis.Conversation, participant_ids=None, *,
                  others=None, existing_share: float = 0.0,
                  max_agreed: int = 3, max_disagreed: int = 3, max_about_me: int = 3,
                  min_context_votes: int = 2, pass_weight: float = 0.0,
                  seed: int = 0, table: polis_votes.VoteTable | None = None,
                  member_order=None) -> Iterator[VoteExample]:
  """One example per (member, candidate statement) vote, member by member.

  Members with fewer than `min_context_votes` agree/disagree votes besides the target are
  skipped: there is nothing to personalise on. Passes are kept with weight `pass_weight`.
  others: participant ids whose votes summarise each candidate in existing-statement mode (the
    member is always left out of them); `existing_share` of the examples, chosen by a seeded
    draw, are rendered that way (1.0: all; 0.0: none, the new-statement mode).
  member_order: the rows of the members to visit, in order (default: matrix order).
  """
  if existing_share > 0 and others is None:
    raise ValueError("vote_examples: existing-statement examples need `others`")
  table = table or polis_votes.VoteTable(conversation)
  others_P = (None if others is None else
              np.flatnonzero(np.isin(conversation.participant_ids, np.asarray(others))))
  if member_order is not None:
    rows = np.asarray(member_order)
  elif participant_ids is None:
    rows = np.arange(len(conversation.participant_ids))
  else:
    rows = np.flatnonzero(np.isin(conversation.participant_ids, np.asarray(participant_ids)))
  for p in rows:
    votes_C = conversation.votes_PC[p]
    targets_T = np.flatnonzero(conversation.seen_PC[p] & table.candidate_C)
    if not len(targets_T):
      continue
    rng = _conversation_rng(conversation, seed, p)
    existing_T = rng.random(len(targets_T)) < existing_share
    summary = None
    if existing_T.any():
      summary = polis_votes.summarise(table, int(p), targets_T, others_P[others_P != p])
    for t, target in enumerate(targets_T):
      prefix, context_votes = member_prefix(
          conversation, table, int(p), np.array([target]), target, rng, max_agreed=max_agreed,
          max_disagreed=max_disagreed, max_about_me=max_about_me)
      if context_votes < min_context_votes:
        continue
      vote = int(votes_C[target])
      comment_id = int(conversation.comment_ids[target])
      text = conversation.comments[comment_id].text
      candidate = (prompts.polis_rm_candidate(text, summary.everyone_T[t], summary.similar_T[t])
                   if existing_T[t] else prompts.polis_rm_candidate(text))
      yield VoteExample(
          conversation=conversation.name, participant_id=int(conversation.participant_ids[p]),
          comment_id=comment_id, prefix=prefix, candidate=candidate, vote=vote,
          label=VOTE_LABELS[vote], weight=pass_weight if vote == polis.PASS else 1.0,
          existing=bool(existing_T[t]))


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
