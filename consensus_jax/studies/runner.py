"""The studies' data: sample -> score for held-out rounds, then judge everything produced.

For each round the consensus program (serving.ConsensusRunner: the SFT policy samples N
candidates, the RM scores every (candidate, member) pair) runs on the round's question and
opinions, and the RM also scores the members' own opinions as candidates (for the
best-predicted-opinion system). Judges (studies.judges) then rate every text for every member.
Nothing the judges say goes back into a selection, except in the systems named "hindsight" /
"judge_*", which are ceilings.
"""
import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from consensus_jax import reward_scoring, serving
from consensus_jax.data import groups as groups_lib
from consensus_jax.data import prompts, records
from consensus_jax.studies import systems


@dataclasses.dataclass
class StudyPipeline:
  runner: serving.ConsensusRunner
  scorer: reward_scoring.Scorer
  groups_per_batch: int = 4
  seed: int = 0

  def _groups(self, rounds: Sequence[records.Round],
              left_out: Sequence[int | None]) -> list[groups_lib.Group]:
    groups = []
    for round_, skip in zip(rounds, left_out):
      kept = [o for m, o in enumerate(round_.opinions) if m != skip]
      groups.append(groups_lib.Group(round_.id, round_.question.text,
                                     tuple(o.participant_id for o in kept),
                                     tuple(o.text for o in kept)))
    return groups

  def fits(self, round_: records.Round) -> bool:
    """Whether the round's prompt (all its opinions) fits the policy's context."""
    return serving.prompt_fits(self.runner.vocabulary, round_.question.text,
                               [o.text for o in round_.opinions], self.runner.policy_config,
                               self.runner.cfg.sampler)

  def run(self, rounds: Sequence[records.Round], left_out: Sequence[int | None] | None = None,
          score_opinions: bool = True, salt: int = 0) -> list[systems.GroupOutputs]:
    """GroupOutputs per round; `left_out[g]` drops that member's opinion (exclusion study):
    the policy never reads it and the RM scores only the remaining members."""
    left_out = list(left_out) if left_out is not None else [None] * len(rounds)
    groups = self._groups(rounds, left_out)
    rng = jax.random.key(self.seed * 1000 + salt)
    outputs = []
    for start in range(0, len(groups), self.groups_per_batch):
      batch = groups[start:start + self.groups_per_batch]
      rng, batch_rng = jax.random.split(rng)
      out, texts = self.runner.run_arrays(batch, batch_rng)
      opinions_BOM = None
      if score_opinions:
        prefixes = [[self.scorer.prefix_ids(prompts.rm_prefix(g.question, o))
                     for o in g.opinions] for g in batch]
        candidates = [[self.scorer.candidate_ids(o) for o in g.opinions] for g in batch]
        opinions_BOM = self.scorer.utilities(prefixes, candidates)
      for b, group in enumerate(batch):
        members = len(group.opinions)
        outputs.append(systems.GroupOutputs(
            round_id=group.id, samples=texts[b],
            sample_valid_N=np.asarray(out.candidate_valid_BN[b], bool),
            rm_samples_NM=np.asarray(out.utilities_BNM[b, :, :members], np.float64),
            rm_opinions_OM=(np.asarray(opinions_BOM[b, :members, :members], np.float64)
                            if opinions_BOM is not None else np.zeros((0, members)))))
    return outputs
