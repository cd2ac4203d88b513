"""Simulated raters that judge any text for a synthetic round's members; never the selector.

The primary judge is the population that generated the round: its members (their latent
stances, concerns and biases from the round's metadata) rate each statement with the
simulator's noise, on the 1-7 scale. The robustness judge is a perturbed population: the same
people, but their concern weights partly redrawn, other rater parameters (how much stance and
concerns count, noise) and a different seed. The reward model never sees either: it is trained
on the ratings of other rounds and scores only text.
"""
import dataclasses
import zlib
from collections.abc import Sequence

import numpy as np

from consensus_jax.data import population, records, synthetic


@dataclasses.dataclass(frozen=True)
class SimulatedJudge:
  name: str = "population"
  rater: population.RaterParams = population.RaterParams()
  weight_redraw: float = 0.0  # share of each member's concern weights drawn afresh
  seed: int = 0

  def _rng(self, round_: records.Round, salt: str) -> np.random.Generator:
    return np.random.default_rng([self.seed, zlib.crc32(f"{round_.id}/{salt}".encode())])

  def members(self, round_: records.Round) -> list[population.Member]:
    members = synthetic.members_from_round(round_)
    if self.weight_redraw == 0.0:
      return members
    rng = self._rng(round_, "weights")
    return [dataclasses.replace(m, weights_K=(1 - self.weight_redraw) * m.weights_K +
                                self.weight_redraw * rng.dirichlet(np.ones(m.weights_K.size)))
            for m in members]

  def rate(self, round_: records.Round, texts: Sequence[str], salt: str = "") -> np.ndarray:
    """Ratings [members, texts] (1-7) of the round's members, in its opinions' order.

    The noise of a text's rating depends on (seed, round, salt, text), so the same text gets
    the same rating however many other texts it is judged with.
    """
    members = self.members(round_)
    expected_MT = population.expected_utilities(round_.question, members, list(texts),
                                                self.rater)
    noise_MT = np.stack([np.random.default_rng(
        [self.seed, zlib.crc32(f"{round_.id}/{salt}/{text}".encode())]).normal(
            0.0, self.rater.noise_std, len(members)) for text in texts], axis=1)
    return np.clip(np.rint(expected_MT + noise_MT), 1, 7)


PRIMARY = SimulatedJudge()
PERTURBED = SimulatedJudge(
    name="perturbed_population",
    rater=population.RaterParams(stance_weight=2.2, concern_weight=2.2, noise_std=0.8,
                                 repetition_penalty=2.0, rambling_penalty_per_word=0.02),
    weight_redraw=0.5, seed=1)
JUDGES = (PRIMARY, PERTURBED)
