"""Every prompt format in the project (the SFT policy's and the reward model's inputs).

Reward-model prompts are split into a member prefix (question + what we know of the member)
and a candidate suffix. The tasks tokenize the two parts separately and concatenate the token
ids, and the on-device scorer does the same with cached prefix tokens, so training and scoring
see identical ids: rm_prompt(q, o, c) == rm_prefix(q, o) + rm_suffix(c) as text, and
tokens(prefix) + tokens(suffix) as ids.
"""
from collections.abc import Sequence

def sft_prompt(question: str, opinions: Sequence[str]) -> str:
  """The policy's input: the question and each member's opinion, asking for a consensus."""
  lines = [f"Question: {question.strip()}"]
  lines += [f"Opinion {i}: {' '.join(opinion.split())}" for i, opinion in enumerate(opinions, 1)]
  lines.append("Consensus statement:")
  return "\n".join(lines)


def sft_target(statement: str) -> str:
  """The policy's output: the chosen statement, whitespace normalised."""
  return " ".join(statement.split())


def rm_prefix(question: str, member_opinion: str) -> str:
  """The member part of the RM input: the question and this member's own opinion."""
  return (f"Question: {question.strip()}\n"
          f"Member's opinion: {' '.join(member_opinion.split())}\n")


def rm_suffix(candidate: str) -> str:
  """The candidate part of the RM input; the score is read at its last token."""
  return f"Statement: {' '.join(candidate.split())}"


def rm_prompt(question: str, member_opinion: str, candidate: str) -> str:
  return rm_prefix(question, member_opinion) + rm_suffix(candidate)


def polis_rm_prefix(topic: str, agreed: Sequence[str], disagreed: Sequence[str],
                    about_me: Sequence[str] = ()) -> str:
  """The member part for Polis: their votes on other statements stand in for an opinion.

  `about_me` holds self-descriptions the member agreed with ("I live in a town").
  """
  lines = [f"Question: {topic.strip()}"]
  if about_me:
    lines.append("About me: " + " ".join(_sentence(s) for s in about_me))
  lines += [f"I agree: {_sentence(s)}" for s in agreed]
  lines += [f"I disagree: {_sentence(s)}" for s in disagreed]
  return "\n".join(lines) + "\n"


def _sentence(text: str) -> str:
  return " ".join(text.split())
