"""Synthetic deliberation rounds: simulated groups, candidate statements, every member's ratings.

Each round: a question from the bank (split kept), a group of 3-5 simulated members
(population.py) who each write an opinion, 16 candidate statements that mix members' stances
and concerns (standing in for earlier model samples), every member's 1-7 rating of every
candidate and their ranking (by the same noisy utility, so never contradicting the ratings).
The members' latent traits go in the round's metadata, so the same people can later rate new
text (e.g. a trained model's samples): see members_from_round.

Deterministic: round g of split s depends only on (seed, s, g).

  python -m consensus_jax.data.synthetic --out_dir=/tmp/synth --num_groups=2000 --seed=0
"""
import argparse
import os
import pathlib

import numpy as np

from consensus_jax.data import population
from consensus_jax.data import question_bank
from consensus_jax.data import records
from consensus_jax.data import statement_writer
from consensus_jax.data.records import Question

NUM_CANDIDATES = 16
MIN_GROUP_SIZE = 3
MAX_GROUP_SIZE = 5
_CANDIDATE_STANCE_NOISE = 0.15
_BOTH_SIDES_PROBABILITY = 0.3
_HEDGE_PROBABILITY = 0.25
_ACKNOWLEDGE_OPPOSING_PROBABILITY = 0.6


def _merge_concern(concerns: dict[int, int], consideration: int, valence: int) -> None:
  # Two members pulling one concern in opposite directions: acknowledge it without a side.
  if consideration in concerns and concerns[consideration] != valence:
    concerns[consideration] = 0
  else:
    concerns.setdefault(consideration, valence)


def write_candidate(question: Question, members: list[population.Member],
                    subset: list[int], rng: np.random.Generator, *,
                    concerns_per_member: int = 1) -> str:
  """A group-voice statement built from the stances and top concerns of `subset`."""
  stances = np.array([members[i].stance for i in subset])
  stance = float(np.clip(stances.mean() + rng.normal(0, _CANDIDATE_STANCE_NOISE), -1, 1))
  if stances.min() < 0 < stances.max() and rng.random() < _BOTH_SIDES_PROBABILITY:
    stance = 0.0
  concerns: dict[int, int] = {}
  for i in subset:
    for k in members[i].top_concerns(concerns_per_member):
      valence = int(members[i].valence_K[k])
      if valence * stance < 0 and rng.random() < _ACKNOWLEDGE_OPPOSING_PROBABILITY:
        valence = 0
      _merge_concern(concerns, k, valence)
  concern_list = [statement_writer.Concern(k, v) for k, v in concerns.items()]
  return statement_writer.write_statement(question, stance, concern_list, voice="We", rng=rng,
                                          hedge=rng.random() < _HEDGE_PROBABILITY)


def write_candidates(question: Question, members: list[population.Member], num: int,
                     rng: np.random.Generator) -> list[str]:
  """Candidates from random subsets of the group: from one member's side to everyone's."""
  texts = []
  for _ in range(num):
    size = int(rng.integers(1, len(members) + 1))
    subset = sorted(int(i) for i in rng.choice(len(members), size, replace=False))
    texts.append(write_candidate(question, members, subset, rng,
                                 concerns_per_member=1 if rng.random() < 0.7 else 2))
  return texts


def write_consensus(question: Question, members: list[population.Member],
                    rng: np.random.Generator) -> str:
  """A statement addressing every member's weightiest concern, at the group's mean stance."""
  return write_candidate(question, members, list(range(len(members))), rng)


def _member_metadata(member: population.Member) -> dict:
  return {"id": member.id, "stance": member.stance, "weights": member.weights_K.tolist(),
          "valence": member.valence_K.tolist(), "bias": member.bias}


def members_from_round(round_: records.Round) -> list[population.Member]:
  """The simulated members behind a synthetic round, to rate new statements for that group."""
  if "members" not in round_.metadata:
    raise ValueError(f"round {round_.id!r} has no simulated members in its metadata")
  return [population.Member(m["id"], float(m["stance"]), np.asarray(m["weights"], float),
                            np.asarray(m["valence"], np.int8), float(m["bias"]))
          for m in round_.metadata["members"]]


def generate_round(question: Question, round_id: str, rng: np.random.Generator, *,
                   group_size: int | None = None,
                   num_candidates: int = NUM_CANDIDATES) -> records.Round:
  if group_size is None:
    group_size = int(rng.integers(MIN_GROUP_SIZE, MAX_GROUP_SIZE + 1))
  members = population.sample_group(group_size, rng)
  opinions = tuple(records.Opinion(m.id, population.write_opinion(m, question, rng))
                   for m in members)
  texts = write_candidates(question, members, num_candidates, rng)
  candidates = tuple(records.Candidate(f"c{j}", text, "model") for j, text in enumerate(texts))
  ratings_MC, utilities_MC = population.rate(question, members, texts, rng)
  agreement = {m.id: {c.id: int(ratings_MC[i, j]) for j, c in enumerate(candidates)}
               for i, m in enumerate(members)}
  rankings = {m.id: tuple((candidates[j].id,) for j in np.argsort(-utilities_MC[i], kind="stable"))
              for i, m in enumerate(members)}
  return records.Round(id=round_id, question=question, opinions=opinions, candidates=candidates,
                       agreement=agreement, rankings=rankings,
                       metadata={"members": [_member_metadata(m) for m in members]})


def generate_split(questions: list[Question], split: str, num_groups: int, seed: int):
  """Yields `num_groups` rounds of `split`; round g depends only on (seed, split, g)."""
  pool = [q for q in questions if q.split == split]
  if not pool:
    raise ValueError(f"no questions in split {split!r}")
  split_index = question_bank.SPLITS.index(split)
  for g in range(num_groups):
    rng = np.random.default_rng([seed, split_index, g])
    question = pool[int(rng.integers(len(pool)))]
    yield generate_round(question, f"{split}-{seed}-{g:06d}", rng)


def generate_dataset(out_dir: str | os.PathLike, num_groups: dict[str, int], seed: int,
                     questions: list[Question] | None = None) -> dict[str, pathlib.Path]:
  """Writes <out_dir>/<split>.jsonl for each split in num_groups; returns the paths."""
  questions = questions if questions is not None else question_bank.load_questions()
  out_dir = pathlib.Path(out_dir)
  written = {}
  for split, count in num_groups.items():
    path = out_dir / f"{split}.jsonl"
    records.write_jsonl(path, generate_split(questions, split, count, seed))
    written[split] = path
  return written


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--num_groups", type=int, default=2000, help="train rounds")
  parser.add_argument("--num_eval_groups", type=int, default=None,
                      help="rounds per test split (default: num_groups // 10)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  num_eval = args.num_eval_groups if args.num_eval_groups is not None else max(
      1, args.num_groups // 10)
  counts = {"train": args.num_groups, "iid_test": num_eval, "ood_test": num_eval}
  for split, path in generate_dataset(args.out_dir, counts, args.seed).items():
    print(f"{split}: {counts[split]} rounds -> {path}")


if __name__ == "__main__":
  main()
