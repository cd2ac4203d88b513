"""Writes varied English statements from a stance and a list of concerns.

Used both for members' opinions (first person singular) and for the candidate statements that
stand in for earlier model samples (first person plural). The words chosen carry the cues that
statement_features.parse_statement reads back, so what is written is what gets rated.
"""
import dataclasses

import numpy as np

from consensus_jax.data import considerations as considerations_lib
from consensus_jax.data.records import Question

_OPENERS = {
    # (voice, strength) -> templates; {s} is the question's affirming or negating statement.
    ("I", "strong"): ("I strongly believe that {s}.", "I am absolutely convinced that {s}.",
                      "I firmly think that {s}."),
    ("I", "default"): ("I think that {s}.", "In my view, {s}.", "I believe that {s}."),
    ("I", "weak"): ("On balance, I lean towards the view that {s}.",
                    "I tentatively think that {s}.", "Perhaps {s}, though I am unsure."),
    ("We", "strong"): ("We strongly believe that {s}.", "We are firmly agreed that {s}."),
    ("We", "default"): ("We believe that {s}.", "Our view is that {s}.",
                        "As a group, we think that {s}."),
    ("We", "weak"): ("On balance, we lean towards the view that {s}.",
                     "We tentatively conclude that {s}."),
}
_BOTH_SIDES = {
    "I": ("I can see both sides: some say that {a}, others that {n}.",),
    "We": ("We see both sides of this: some of us feel that {a}, while others feel that {n}.",
           "Our group is split between the view that {a} and the view that {n}."),
}
_SUPPORTING = ("This is because {p}.", "Mainly, {p}.", "Above all, {p}.", "Also, {p}.")
_RESERVATION = ("However, I worry that {p}.", "That said, {p}.", "Still, {p}.")
_RESERVATION_WE = ("However, some of us worry that {p}.", "That said, we recognise that {p}.")
_NEUTRAL = ("At the same time, {p}.", "{P}.", "In any case, {p}.")
_HEDGES = ("This should happen step by step.", "Any change needs to come with safeguards.",
           "We should look for common ground.")
_PERSONAL = ("This matters to me personally.", "I have thought about this a lot.",
             "Speaking from my own experience, this is important.", "")

STRONG_THRESHOLD = 0.75
WEAK_THRESHOLD = 0.4
BOTH_SIDES_THRESHOLD = 0.12


@dataclasses.dataclass(frozen=True)
class Concern:
  consideration: int  # index into considerations.CONSIDERATIONS
  valence: int  # +1 the proposal helps on this ground, -1 it hurts, 0 acknowledge only


def _embed(statement: str) -> str:
  """'The UK should NOT ...' -> 'the UK should not ...' for use inside a sentence."""
  statement = statement.strip().rstrip(".").replace(" NOT ", " not ")
  if len(statement) > 1 and not statement[1].isupper():
    statement = statement[0].lower() + statement[1:]
  return statement


def _choice(rng: np.random.Generator, options):
  return options[int(rng.integers(len(options)))]


def _stance_sentence(question: Question, stance: float, voice: str,
                     rng: np.random.Generator) -> str:
  affirming = _embed(question.affirming_statement or question.text)
  negating = _embed(question.negating_statement or question.text)
  if abs(stance) < BOTH_SIDES_THRESHOLD:
    return _choice(rng, _BOTH_SIDES[voice]).format(a=affirming, n=negating)
  strength = ("strong" if abs(stance) >= STRONG_THRESHOLD else
              "default" if abs(stance) >= WEAK_THRESHOLD else "weak")
  sentence = _choice(rng, _OPENERS[(voice, strength)]).format(
      s=affirming if stance > 0 else negating)
  return sentence[0].upper() + sentence[1:]


def _fresh_choice(rng: np.random.Generator, options, used: set[str]) -> str:
  """A template not yet used in this statement, so connectives do not repeat."""
  fresh = [o for o in options if o not in used] or list(options)
  choice = _choice(rng, fresh)
  used.add(choice)
  return choice


def _concern_sentence(concern: Concern, stance: float, voice: str,
                      rng: np.random.Generator, used: set[str]) -> str:
  consideration = considerations_lib.CONSIDERATIONS[concern.consideration]
  if concern.valence == 0:
    phrase = _choice(rng, consideration.neutral_phrases)
    template = _fresh_choice(rng, _NEUTRAL, used)
  else:
    phrase = _choice(rng, consideration.pro_phrases if concern.valence > 0
                     else consideration.con_phrases)
    agrees_with_stance = concern.valence * stance >= 0
    template = _fresh_choice(rng, _SUPPORTING if agrees_with_stance else
                             _RESERVATION if voice == "I" else _RESERVATION_WE, used)
  return template.format(p=phrase, P=phrase[0].upper() + phrase[1:])


def write_statement(question: Question, stance: float, concerns: list[Concern], *,
                    voice: str, rng: np.random.Generator, hedge: bool = False) -> str:
  """One statement: a stance sentence, one sentence per concern, an optional hedge."""
  sentences = [_stance_sentence(question, stance, voice, rng)]
  used_templates: set[str] = set()
  sentences += [_concern_sentence(c, stance, voice, rng, used_templates) for c in concerns]
  if hedge:
    sentences.append(_choice(rng, _HEDGES))
  if voice == "I":
    sentences.append(_choice(rng, _PERSONAL))
  return " ".join(s for s in sentences if s)
