"""Reads what a statement says about a question: its stance, the concerns it raises, relevance.

This is the simulated raters' "reading comprehension". It works on any text (human-written,
templated or model-generated), so the simulator can score a decoder's samples. The stance
comes from the question's own affirming / negating statements when the text quotes them, and
otherwise from word overlap with the question plus negation words and stance phrases.
"""
import dataclasses
import re

import numpy as np

from consensus_jax.data import considerations as considerations_lib
from consensus_jax.data.records import Question

STRONG_CUES = ("strongly", "absolutely", "definitely", "certainly", "firmly", "without doubt")
WEAK_CUES = ("lean towards", "tentatively", "somewhat", "perhaps", "on balance", "probably")
HEDGE_CUES = ("both sides", "middle ground", "compromise", "common ground", "with safeguards",
              "reservations", "step by step", "gradually", "in moderation")
PRO_STANCE_CUES = ("i support", "we support", "in favour", "in favor", "i agree", "we agree")
CON_STANCE_CUES = ("i oppose", "we oppose", "i disagree", "we disagree", "against this",
                   "against the idea")
NEGATION_WORDS = frozenset({"not", "no", "never", "shouldnt", "wont", "cant", "cannot", "dont",
                            "doesnt", "isnt", "arent", "wouldnt", "against", "oppose"})
_STOPWORDS = frozenset(
    "a an the of to in on for and or is are be been being it its this that we our us i you "
    "they their them should would will can could do does did have has had more most less "
    "with by as at from into than then so such there here what which who whom whose why how "
    "all any some uk people".split())

STRENGTH_STRONG = 1.0
STRENGTH_DEFAULT = 0.7
STRENGTH_WEAK = 0.4
HEDGE_SHRINK = 0.6  # each hedge (at most two) pulls the stance towards the middle
MIN_OVERLAP_FOR_STANCE = 0.5  # share of the question's content words a paraphrase must reuse


@dataclasses.dataclass(frozen=True)
class StatementFeatures:
  stance: float  # -1 (negating) ... +1 (affirming)
  valence_K: np.ndarray  # int8 per consideration: +1 pro, -1 con, 0 neutral mention or none
  mentioned_K: np.ndarray  # bool per consideration
  relevance: float  # 0 (off topic) ... 1 (quotes the question's statements)
  num_words: int
  distinct_word_ratio: float


def normalize(text: str) -> str:
  """Lower-case words separated by single spaces, padded with a space at each end."""
  text = text.lower().replace("'", "").replace("\u2019", "")
  return " " + " ".join(re.findall(r"[a-z0-9]+", text)) + " "


def _contains(normalized: str, phrase: str) -> bool:
  return f" {phrase} " in normalized


def _count(normalized: str, phrases) -> int:
  return sum(_contains(normalized, p) for p in phrases)


def _content_words(normalized: str) -> set[str]:
  return {w for w in normalized.split() if w not in _STOPWORDS and w not in NEGATION_WORDS}


def _consideration_cues(normalized: str) -> tuple[np.ndarray, np.ndarray]:
  valence_K = np.zeros(considerations_lib.NUM_CONSIDERATIONS, np.int8)
  mentioned_K = np.zeros(considerations_lib.NUM_CONSIDERATIONS, bool)
  for k, consideration in enumerate(considerations_lib.CONSIDERATIONS):
    pro = _count(normalized, consideration.pro_cues) > 0
    con = _count(normalized, consideration.con_cues) > 0
    topic = _count(normalized, consideration.topic_words) > 0
    mentioned_K[k] = pro or con or topic
    # Arguing both ways on one ground reads as an acknowledgement, not a direction.
    valence_K[k] = int(pro) - int(con)
  return valence_K, mentioned_K


def _direction_and_relevance(normalized: str, question: Question) -> tuple[float, float, str]:
  """Returns (direction in {-1, 0, 1}, relevance, text with quoted statements removed)."""
  affirming = normalize(question.affirming_statement).strip()
  negating = normalize(question.negating_statement).strip()
  has_affirming = bool(affirming) and _contains(normalized, affirming)
  has_negating = bool(negating) and _contains(normalized, negating)
  rest = normalized
  for statement in (affirming, negating):
    if statement:
      rest = rest.replace(f" {statement} ", " ")
  if has_affirming or has_negating:
    return float(has_affirming) - float(has_negating), 1.0, rest

  question_words = _content_words(normalize(question.text + " " + question.affirming_statement))
  overlap = len(question_words & _content_words(normalized)) / max(1, len(question_words))
  relevance = min(1.0, overlap / MIN_OVERLAP_FOR_STANCE)
  explicit = _count(normalized, PRO_STANCE_CUES) - _count(normalized, CON_STANCE_CUES)
  if explicit:
    return float(np.sign(explicit)), relevance, rest
  if overlap >= MIN_OVERLAP_FOR_STANCE:
    negated = any(w in NEGATION_WORDS for w in normalized.split())
    return (-1.0 if negated else 1.0), relevance, rest
  return 0.0, relevance, rest


def parse_statement(question: Question, text: str) -> StatementFeatures:
  normalized = normalize(text)
  direction, relevance, rest = _direction_and_relevance(normalized, question)
  # Intensity and concern cues are read with the quoted statements removed, so a question
  # such as "should the government strongly regulate AI" does not count as conviction.
  if _count(rest, STRONG_CUES):
    strength = STRENGTH_STRONG
  elif _count(rest, WEAK_CUES):
    strength = STRENGTH_WEAK
  else:
    strength = STRENGTH_DEFAULT
  strength *= HEDGE_SHRINK ** min(2, _count(rest, HEDGE_CUES))
  valence_K, mentioned_K = _consideration_cues(rest)
  words = normalized.split()
  return StatementFeatures(
      stance=direction * strength,
      valence_K=valence_K,
      mentioned_K=mentioned_K,
      relevance=relevance,
      num_words=len(words),
      distinct_word_ratio=len(set(words)) / max(1, len(words)))
