"""Deliberation rounds and Polis votes -> text examples (dicts of str and float) for the tasks.

Kept free of TensorFlow so the example logic is plain Python; tasks.py tokenizes the results.
"""
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from consensus_jax.data import polis
from consensus_jax.data import polis_examples
from consensus_jax.data import polis_votes
from consensus_jax.data import prompts
from consensus_jax.data import records

UNRATED_LABEL = -1.0


def normalized_rating(rating: int) -> float:
  """1..7 -> 0..1."""
  return (rating - records.RATING_MIN) / (records.RATING_MAX - records.RATING_MIN)


def sft_examples(rounds: Iterable[records.Round]) -> Iterator[dict]:
  """Prompt = question + opinions; target = the candidate the group rated best."""
  for round_ in rounds:
    if not any(round_.agreement.values()):
      continue  # nobody rated anything: there is no best candidate to imitate
    best = round_.candidate(round_.best_candidate_id())
    yield {"inputs": prompts.sft_prompt(round_.question.text, [o.text for o in round_.opinions]),
           "targets": prompts.sft_target(best.text), "round_id": round_.id}


def rating_examples(rounds: Iterable[records.Round]) -> Iterator[dict]:
  """One example per (member, rated candidate): label = normalized agreement."""
  for round_ in rounds:
    opinions = {o.participant_id: o.text for o in round_.opinions}
    for participant_id, ratings in round_.agreement.items():
      prefix = prompts.rm_prefix(round_.question.text, opinions[participant_id])
      for candidate_id, rating in ratings.items():
        yield {"inputs": prefix,
               "targets": prompts.rm_suffix(round_.candidate(candidate_id).text),
               "label": normalized_rating(rating), "weight": 1.0}


def list_examples(rounds: Iterable[records.Round], candidates_per_list: int = 8,
                  seed: int = 0) -> Iterator[dict]:
  """One member's rated candidates in lists of up to `candidates_per_list`, in a random order:
  {"inputs": member prefix, "candidates": [suffix, ...], "labels": [normalized rating, ...]}.

  The RM list converter puts the prefix once and every candidate after it on its own branch,
  so one list trains as many (member, candidate) ratings and every pair among them.
  """
  for round_ in rounds:
    opinions = {o.participant_id: o.text for o in round_.opinions}
    rng = np.random.default_rng([seed, zlib.crc32(round_.id.encode())])
    for participant_id, ratings in round_.agreement.items():
      rated = [c for c in round_.candidate_ids if c in ratings]
      order = [rated[i] for i in rng.permutation(len(rated))]
      prefix = prompts.rm_prefix(round_.question.text, opinions[participant_id])
      for start in range(0, len(order), candidates_per_list):
        chunk = order[start:start + candidates_per_list]
        yield {"inputs": prefix,
               "candidates": [prompts.rm_suffix(round_.candidate(c).text) for c in chunk],
               "labels": [normalized_rating(ratings[c]) for c in chunk]}


def _ranked_pairs(ranking: records.Ranking) -> list[tuple[str, str]]:
  """Every (better, worse) pair the ranking orders; tied candidates give no pair."""
  pairs = []
  for i, better_tier in enumerate(ranking):
    for worse_tier in ranking[i + 1:]:
      pairs += [(b, w) for b in better_tier for w in worse_tier]
  return pairs


def pairwise_examples(rounds: Iterable[records.Round], pairs_per_member: int = 8,
                      seed: int = 0) -> Iterator[dict]:
  """Up to `pairs_per_member` random (chosen, rejected) pairs from each member's ranking.

  Labels are the candidates' normalized ratings by that member, UNRATED_LABEL if unrated.
  """
  for round_ in rounds:
    if not round_.rankings:
      continue
    opinions = {o.participant_id: o.text for o in round_.opinions}
    rng = np.random.default_rng([seed, zlib.crc32(round_.id.encode())])
    for participant_id, ranking in round_.rankings.items():
      pairs = _ranked_pairs(ranking)
      chosen_pairs = rng.permutation(len(pairs))[:pairs_per_member]
      prefix = prompts.rm_prefix(round_.question.text, opinions[participant_id])
      ratings = round_.agreement.get(participant_id, {})
      for index in sorted(chosen_pairs):
        better, worse = pairs[index]
        yield {"inputs": prefix,
               "chosen": prompts.rm_suffix(round_.candidate(better).text),
               "rejected": prompts.rm_suffix(round_.candidate(worse).text),
               "chosen_label": normalized_rating(ratings[better]) if better in ratings
                               else UNRATED_LABEL,
               "rejected_label": normalized_rating(ratings[worse]) if worse in ratings
                                 else UNRATED_LABEL}


def polis_vote_text_examples(conversations: Iterable[polis.Conversation], split: str,
                             heldout_fraction: float = 0.2, pass_weight: float = 0.0,
                             seed: int = 0, existing_share: float = 0.0,
                             shuffle_members: bool = False) -> Iterator[dict]:
  """Polis votes as RM examples; split 'train' / 'heldout' picks participants, 'all' keeps all.

  Passes with weight 0 are dropped (they would carry no loss). `existing_share` of the examples
  carry other participants' votes on the candidate (polis_examples.vote_examples), summarised
  over the conversation's training participants (a training member's own votes left out).
  shuffle_members: visit the members of all conversations in one seeded random order, so that a
  shuffle buffer mixes conversations (training); otherwise conversation by conversation.
  """
  conversations = list(conversations)
  tables = [polis_votes.VoteTable(c) for c in conversations]
  splits = [polis_examples.split_participants(c, heldout_fraction, seed) for c in conversations]
  plan = []  # (conversation index, member row)
  for i, conversation in enumerate(conversations):
    wanted = conversation.participant_ids if split == "all" else splits[i][split]
    plan += [(i, row) for row in np.flatnonzero(np.isin(conversation.participant_ids, wanted))]
  if shuffle_members:
    plan = [plan[j] for j in np.random.default_rng(seed).permutation(len(plan))]
  for i, row in plan:
    for example in polis_examples.vote_examples(
        conversations[i], member_order=[row], others=splits[i]["train"],
        existing_share=existing_share, pass_weight=pass_weight, seed=seed, table=tables[i]):
      if example.weight > 0:
        yield {"inputs": example.prefix, "targets": prompts.rm_suffix(example.candidate),
               "label": example.label, "weight": example.weight}
