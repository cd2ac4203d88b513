"""Simulated people: latent stances and concerns, the opinions they write, how they rate text.

A member holds a stance in [-1, 1] on the question (sign: for or against its affirming
statement; size: conviction) and weights over the considerations (what they care about), with
a direction per consideration (does the proposal help or hurt on that ground; usually the
same as their stance, sometimes a reservation). Their agreement with a statement rises when
its stance is close to theirs (a quadratic loss, so a middle-ground statement can suit a split
group better than either side's) and when it speaks to their concerns, and falls when it is
off topic, rambling or repetitive. Ratings are rounded, noisy, and clipped to 1-7.
"""
import dataclasses

import numpy as np

from consensus_jax.data import considerations as considerations_lib
from consensus_jax.data import statement_features
from consensus_jax.data import statement_writer
from consensus_jax.data.records import Question

NUM_K = considerations_lib.NUM_CONSIDERATIONS


@dataclasses.dataclass(frozen=True)
class RaterParams:
  baseline: float = 3.0
  stance_weight: float = 1.6
  concern_weight: float = 3.0
  shared_concern_credit: float = 1.0  # a concern voiced the way the member sees it
  acknowledged_concern_credit: float = 0.6  # a concern acknowledged without taking a side
  opposed_concern_credit: float = -0.5  # the member's concern argued the other way
  concerns_before_dilution: int = 3  # naming more than this many concerns dilutes each one
  off_topic_penalty: float = 3.0
  words_before_rambling: int = 90
  rambling_penalty_per_word: float = 0.01
  repetition_penalty: float = 1.5
  noise_std: float = 0.5


@dataclasses.dataclass(frozen=True)
class PopulationParams:
  group_lean_range: float = 0.6  # each question's population leans by U(-r, r)
  stance_spread: float = 0.55  # members' stances scatter around that lean
  concern_concentration: float = 0.4  # Dirichlet alpha: small means few strong concerns
  reservation_probability: float = 0.25  # a concern that cuts against one's own stance
  bias_std: float = 0.3  # some people rate everything higher or lower


@dataclasses.dataclass(frozen=True)
class Member:
  id: str
  stance: float
  weights_K: np.ndarray  # concern weights, sum to 1
  valence_K: np.ndarray  # +1 / -1: how the member thinks the proposal fares on each ground
  bias: float

  def top_concerns(self, n: int) -> list[int]:
    return [int(k) for k in np.argsort(-self.weights_K, kind="stable")[:n]]


def sample_member(member_id: str, lean: float, rng: np.random.Generator,
                  params: PopulationParams = PopulationParams()) -> Member:
  stance = float(np.clip(lean + rng.normal(0.0, params.stance_spread), -1.0, 1.0))
  weights_K = rng.dirichlet(np.full(NUM_K, params.concern_concentration))
  side = 1 if stance > 0 else -1 if stance < 0 else int(rng.choice([-1, 1]))
  flips_K = rng.random(NUM_K) < params.reservation_probability
  valence_K = np.where(flips_K, -side, side).astype(np.int8)
  return Member(member_id, stance, weights_K, valence_K, float(rng.normal(0.0, params.bias_std)))


def sample_group(size: int, rng: np.random.Generator,
                 params: PopulationParams = PopulationParams()) -> list[Member]:
  lean = rng.uniform(-params.group_lean_range, params.group_lean_range)
  return [sample_member(f"p{i}", lean, rng, params) for i in range(size)]


def write_opinion(member: Member, question: Question, rng: np.random.Generator) -> str:
  """The member's own view: their stance and their one or two weightiest concerns."""
  num_concerns = 1 if rng.random() < 0.4 else 2
  concerns = [statement_writer.Concern(k, int(member.valence_K[k]))
              for k in member.top_concerns(num_concerns)]
  return statement_writer.write_statement(question, member.stance, concerns, voice="I", rng=rng)


def _concern_credit_MK(members: list[Member], features, params: RaterParams) -> np.ndarray:
  valence_MK = np.stack([m.valence_K for m in members])
  credit_MK = np.where(
      features.valence_K[None, :] == 0, params.acknowledged_concern_credit,
      np.where(features.valence_K[None, :] == valence_MK, params.shared_concern_credit,
               params.opposed_concern_credit))
  return np.where(features.mentioned_K[None, :], credit_MK, 0.0)


def expected_utilities(question: Question, members: list[Member], texts: list[str],
                       params: RaterParams = RaterParams()) -> np.ndarray:
  """Noise-free agreement on the 1-7 scale (not rounded or clipped), shape [members, texts]."""
  stance_M = np.array([m.stance for m in members])
  weights_MK = np.stack([m.weights_K for m in members])
  bias_M = np.array([m.bias for m in members])
  utility_MC = np.zeros((len(members), len(texts)))
  for c, text in enumerate(texts):
    features = statement_features.parse_statement(question, text)
    dilution = max(1.0, features.mentioned_K.sum() / params.concerns_before_dilution) ** 0.5
    concern_M = (weights_MK * _concern_credit_MK(members, features, params)).sum(-1) / dilution
    stance_fit_M = 1.0 - (stance_M - features.stance) ** 2
    penalty = params.off_topic_penalty * (1.0 - features.relevance)
    penalty += params.rambling_penalty_per_word * max(
        0, features.num_words - params.words_before_rambling)
    if features.num_words >= 20 and features.distinct_word_ratio < 0.4:
      penalty += params.repetition_penalty
    utility_MC[:, c] = (params.baseline + bias_M + params.stance_weight * stance_fit_M
                        + params.concern_weight * concern_M - penalty)
  return utility_MC


def rate(question: Question, members: list[Member], texts: list[str], rng: np.random.Generator,
         params: RaterParams = RaterParams()) -> tuple[np.ndarray, np.ndarray]:
  """Each member's 1-7 agreement with each text, and the noisy utilities behind them.

  Returns (ratings_MC int, utilities_MC float). A member's ranking of the texts is the order
  of their noisy utilities, so it never contradicts their ratings.
  """
  utility_MC = expected_utilities(question, members, texts, params)
  utility_MC = utility_MC + rng.normal(0.0, params.noise_std, utility_MC.shape)
  ratings_MC = np.clip(np.rint(utility_MC), 1, 7).astype(np.int64)
  return ratings_MC, utility_MC
