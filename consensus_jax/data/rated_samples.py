"""New statements for a synthetic round, rated by the round's own simulated members.

The paper's loop: the reward model is trained on ratings of the policy's own samples, not only
on the statements the data came with, so that it learns what the policy gets wrong (a garbled
question, rambling, repetition) and can rank the policy's candidates. For a synthetic round the
members behind the ratings are in its metadata (synthetic.members_from_round), so they can rate
any text with the same rater as the round's original candidates (population.rate: noise
included; it is the same population the held-out judge is drawn from, on other rounds).
"""
import zlib
from collections.abc import Sequence

import numpy as np

from consensus_jax.data import population, records, synthetic
from consensus_jax.data.errors import DataError


def rater_rng(round_id: str, seed: int) -> np.random.Generator:
  """The rating noise of one round's new statements: depends only on (seed, round id)."""
  return np.random.default_rng([seed, zlib.crc32(round_id.encode())])


def _ranking_from_ratings(candidate_ids: Sequence[str],
                          ratings: dict[str, int]) -> records.Ranking:
  """Tiers of equal rating, best first: the ranking the ratings imply, with ties kept
  (candidates the member did not rate are left out of it)."""
  tiers: dict[int, list[str]] = {}
  for candidate_id in candidate_ids:
    if candidate_id in ratings:
      tiers.setdefault(ratings[candidate_id], []).append(candidate_id)
  return tuple(tuple(tiers[r]) for r in sorted(tiers, reverse=True))


def with_rated_samples(round_: records.Round, texts: Sequence[str], seed: int = 0, *,
                       provenance: str = "policy", id_prefix: str = "s") -> records.Round:
  """`round_` with `texts` added as candidates, each rated 1-7 by every member.

  Empty texts and texts equal to an existing candidate are skipped (a duplicate would give
  the RM the same statement twice with two noisy labels). The original candidates keep their
  ratings. The round's rankings become the tiers of each member's ratings over all candidates
  (the original finer order came from utilities the record does not hold).
  """
  members = synthetic.members_from_round(round_)
  if [m.id for m in members] != round_.participant_ids:
    raise DataError(f"round {round_.id!r}: its metadata's members do not match its opinions")
  seen = {c.text for c in round_.candidates}
  new_texts = []
  for text in texts:
    text = text.strip()
    if text and text not in seen:
      seen.add(text)
      new_texts.append(text)
  if not new_texts:
    return round_
  taken = set(round_.candidate_ids)
  new_candidates = []
  for j, text in enumerate(new_texts):
    candidate_id = f"{id_prefix}{j}"
    while candidate_id in taken:
      candidate_id += "_"
    taken.add(candidate_id)
    new_candidates.append(records.Candidate(candidate_id, text, provenance))
  ratings_MS, _ = population.rate(round_.question, members, new_texts,
                                  rater_rng(round_.id, seed))
  agreement = {}
  for m, member in enumerate(members):
    agreement[member.id] = dict(round_.agreement.get(member.id, {}))
    agreement[member.id].update(
        {c.id: int(ratings_MS[m, s]) for s, c in enumerate(new_candidates)})
  candidates = round_.candidates + tuple(new_candidates)
  rankings = {pid: _ranking_from_ratings([c.id for c in candidates], ratings)
              for pid, ratings in agreement.items()}
  return records.Round(id=round_.id, question=round_.question, opinions=round_.opinions,
                       candidates=candidates, agreement=agreement, quality=round_.quality,
                       rankings=rankings, metadata=round_.metadata)
