"""The reward model's reference predictors, scored on the same rows (studies.rating_rows).

  simulator_ceiling   the population's own noise-free expected ratings of each member
                      (`population.expected_utilities`): what a perfect model of the simulator
                      would predict; the noisy ratings keep it below 1
  opinion_reader      the simulator's rating rule applied to what each member's written opinion
                      says about them (its parsed stance and concerns; concerns it does not
                      name at the population's prior, no personal bias): the ceiling for a
                      model that sees only the opinion, as the RM does
  bag_of_words        ridge regression on candidate words, opinion words and every
                      (opinion word, candidate word) pair, fit on the training ratings: a peer
                      that can learn "members who wrote X like statements saying Y"
  other_members       the candidate's mean rating by the round's other members: popularity in
                      the group, which a deployed selector would not have (it needs their votes)
Chance is 0.5 pairwise accuracy.
"""
from collections.abc import Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from consensus_jax.data import population, records, statement_features, synthetic
from consensus_jax.studies import rating_rows


def _expected_ratings(rows: rating_rows.RatingRows, members_of) -> np.ndarray:
  """The simulator's noise-free ratings of every row, by the members `members_of(round)`."""
  per_round = []
  for round_ in rows.rounds:
    texts = [c.text for c in round_.candidates]
    per_round.append(population.expected_utilities(round_.question, members_of(round_),
                                                   texts).T)
  return rating_rows.from_group_arrays(rows, per_round)


def simulator_ceiling(rows: rating_rows.RatingRows) -> np.ndarray:
  return _expected_ratings(rows, synthetic.members_from_round)


def _member_from_opinion(question: records.Question, opinion: records.Opinion,
                         named_concern_mass: float) -> population.Member:
  """The member as their opinion describes them: its stance; its concerns share
  `named_concern_mass` of the weight, the rest is spread over the others, which are taken to
  cut the way the stance does (a reservation is the exception)."""
  features = statement_features.parse_statement(question, opinion.text)
  named_K = features.mentioned_K
  num_named = int(named_K.sum())
  if num_named in (0, population.NUM_K):
    weights_K = np.full(population.NUM_K, 1.0 / population.NUM_K)
  else:
    weights_K = np.where(named_K, named_concern_mass / num_named,
                         (1.0 - named_concern_mass) / (population.NUM_K - num_named))
  side = 1 if features.stance >= 0 else -1
  valence_K = np.where(named_K & (features.valence_K != 0), features.valence_K, side)
  return population.Member(opinion.participant_id, features.stance, weights_K,
                           valence_K.astype(np.int8), 0.0)


def opinion_reader(rows: rating_rows.RatingRows, named_concern_mass: float = 0.8) -> np.ndarray:
  return _expected_ratings(rows, lambda round_: [
      _member_from_opinion(round_.question, o, named_concern_mass) for o in round_.opinions])


def other_members(rows: rating_rows.RatingRows) -> np.ndarray:
  mean = float(np.mean(rows.rating_R)) if len(rows) else 4.0
  out = np.empty(len(rows))
  for r in range(len(rows)):
    same = (rows.round_R == rows.round_R[r]) & (rows.candidate_R == rows.candidate_R[r])
    others = same & (rows.member_R != rows.member_R[r])
    out[r] = rows.rating_R[others].mean() if others.any() else mean
  return out


def _words(text: str) -> list[str]:
  return sorted(set(statement_features.normalize(text).split()))


class BagOfWordsPeer:
  """Ridge on [candidate words, opinion words, opinion word x candidate word] indicators."""

  def __init__(self, l2: float = 10.0, max_rows: int | None = 40_000, iterations: int = 200):
    self.l2, self.max_rows, self.iterations = l2, max_rows, iterations
    self._word_ids: dict[str, int] = {}
    self._columns = np.zeros(0, np.int64)
    self._weights = np.zeros(0)
    self._mean = 0.0

  def _ids(self, text: str, grow: bool) -> np.ndarray:
    ids = []
    for word in _words(text):
      if grow:
        self._word_ids.setdefault(word, len(self._word_ids))
      if word in self._word_ids:
        ids.append(self._word_ids[word])
    return np.asarray(ids, np.int64)

  def _raw_features(self, rows: rating_rows.RatingRows, grow: bool) -> list[np.ndarray]:
    """Per row, its feature keys: 2 * id (candidate word), 2 * id + 1 (opinion word), and
    2 * (2 * V) + o * V + c for a word pair (V fixed once the vocabulary is built)."""
    cache: dict[str, np.ndarray] = {}

    def ids(text):
      if text not in cache:
        cache[text] = self._ids(text, grow)
      return cache[text]

    pairs = []
    for g, m, n in zip(rows.round_R, rows.member_R, rows.candidate_R):
      round_ = rows.rounds[g]
      pairs.append((ids(round_.opinions[m].text), ids(round_.candidates[n].text)))
    vocab = len(self._word_ids)
    return [np.concatenate([2 * c, 2 * o + 1, 2 * vocab + (o[:, None] * vocab + c).ravel()])
            for o, c in pairs]

  def _matrix(self, keys_R: list[np.ndarray]) -> scipy.sparse.csr_matrix:
    columns, indptr = [], [0]
    for keys in keys_R:
      index = np.searchsorted(self._columns, keys)
      index = index[(index < self._columns.size) &
                    (self._columns[np.minimum(index, self._columns.size - 1)] == keys)]
      columns.append(index)
      indptr.append(indptr[-1] + index.size)
    columns = np.concatenate(columns) if columns else np.zeros(0, np.int64)
    return scipy.sparse.csr_matrix((np.ones(columns.size), columns, np.asarray(indptr)),
                                   shape=(len(keys_R), self._columns.size))

  def fit(self, rows: rating_rows.RatingRows) -> "BagOfWordsPeer":
    if self.max_rows is not None and len(rows) > self.max_rows:
      keep = np.random.default_rng(0).choice(len(rows), self.max_rows, replace=False)
      keep.sort()
      rows = rating_rows.RatingRows(rows.rounds, rows.round_R[keep], rows.member_R[keep],
                                    rows.candidate_R[keep], rows.rating_R[keep])
    for round_ in rows.rounds:  # the vocabulary is fixed before any pair key is made
      for text in [o.text for o in round_.opinions] + [c.text for c in round_.candidates]:
        self._ids(text, grow=True)
    keys_R = self._raw_features(rows, grow=False)
    self._columns = np.unique(np.concatenate(keys_R))
    x = self._matrix(keys_R)
    self._mean = float(rows.rating_R.mean())
    self._weights = scipy.sparse.linalg.lsqr(x, rows.rating_R - self._mean,
                                             damp=np.sqrt(self.l2),
                                             iter_lim=self.iterations)[0]
    return self

  def predict(self, rows: rating_rows.RatingRows) -> np.ndarray:
    return self._matrix(self._raw_features(rows, grow=False)) @ self._weights + self._mean


def reference_metrics(rows: rating_rows.RatingRows,
                      bag_of_words: BagOfWordsPeer | None) -> dict[str, dict[str, float]]:
  """Every reference predictor's metrics on `rows` (the rows the RM is scored on)."""
  out = {"chance": {"pairwise_accuracy": 0.5}}
  if bag_of_words is not None:
    predicted_R = bag_of_words.predict(rows)
    out["bag_of_words"] = {**rating_rows.metrics(rows, predicted_R),
                           **rating_rows.member_spread(rows, predicted_R)}
  out["other_members"] = rating_rows.metrics(rows, other_members(rows))
  if all("members" in r.metadata for r in rows.rounds):
    predicted_R = simulator_ceiling(rows)
    out["simulator_ceiling"] = {**rating_rows.metrics(rows, predicted_R),
                                **rating_rows.member_spread(rows, predicted_R)}
    predicted_R = opinion_reader(rows)
    out["opinion_reader"] = {**rating_rows.metrics(rows, predicted_R),
                             **rating_rows.member_spread(rows, predicted_R)}
  return out


def fit_bag_of_words(train_rounds: Sequence[records.Round], **kwargs) -> BagOfWordsPeer:
  return BagOfWordsPeer(**kwargs).fit(rating_rows.collect(train_rounds))
