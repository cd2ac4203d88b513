"""The one owner of framing: every prompt format in the project, as text and as model ids.

Everything that turns a group, a member or a candidate into what a model reads goes through
this module: the seqio tasks (text, tokenised by seqio), the SFT feature converter (its start
token), the sampler's callers, inference, the reward-model scorer and the studies (ids). So a
training example and the serving path see the same ids at the same positions.

Policy (SFT decoder). A training sequence is `[POLICY_START_ID] + prompt ids + target ids + EOS`
shifted right by SFTFeatureConverter (seqio's `make_autoregressive_inputs` with
`bos_id=POLICY_START_ID`); the first target token is predicted at the position of the last
prompt id. The serving path therefore samples from `policy_prompt_ids`, which starts with the
same start token: without it every position is one off from training.

Reward model. Its input is split into a member prefix (question + what we know of the member)
and a candidate suffix ("Statement: ..." + EOS, scored at the EOS). The tasks tokenise the two
parts separately and concatenate the ids, and the on-device scorer does the same with cached
prefix ids, so rm_prompt(q, o, c) == rm_prefix(q, o) + rm_suffix(c) as text, and
rm_prefix_ids + rm_candidate_ids as ids. On device the consensus program builds a candidate from
`rm_statement_head_ids` + the policy's generated ids (+ EOS), which equals rm_candidate_ids of
the decoded text (tests/test_framing.py).

`vocabulary` below is anything with `encode(text) -> ids` and `eos_id` (a seqio Vocabulary).
"""
from collections.abc import Sequence

# The token seqio's make_autoregressive_inputs puts at the start of each shifted sequence
# (SFTFeatureConverter passes it as bos_id). The SentencePiece model has no BOS of its own
# (vocab.py), and id 0 is also its pad id: positions and segment ids, not the id, tell them apart.
POLICY_START_ID = 0
RM_STATEMENT_HEAD = "Statement:"


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
  return f"{RM_STATEMENT_HEAD} {' '.join(candidate.split())}"


def rm_prompt(question: str, member_opinion: str, candidate: str) -> str:
  return rm_prefix(question, member_opinion) + rm_suffix(candidate)


def polis_rm_prefix(topic: str, votes: Sequence[tuple[str, bool]],
                    about_me: Sequence[str] = (),
                    member_agree_share: float | None = None) -> str:
  """The member part for Polis: their votes on other statements stand in for an opinion.

  `votes`: (statement, agreed) pairs, rendered in the given order, one line each ("I agree: ..."
  or "I disagree: ..."); the caller puts the most telling first, since the RM's input is cut at
  the end. `about_me`: self-descriptions the member agreed with ("I live in a town");
  `member_agree_share`: the share of their other agree / disagree votes that agree.
  """
  lines = [f"Question: {topic.strip()}"]
  if about_me:
    lines.append("About me: " + " ".join(_sentence(s) for s in about_me))
  if member_agree_share is not None:
    lines.append(f"I agree with {share_count(member_agree_share)} in {SHARE_PARTS} statements.")
  lines += [f"{'I agree' if agreed else 'I disagree'}: {_sentence(text)}"
            for text, agreed in votes]
  return "\n".join(lines) + "\n"


def polis_rm_candidate(statement: str, everyone_agree_share: float | None = None,
                       similar_agree_share: float | None = None) -> str:
  """A Polis statement as the RM's candidate. In existing-statement mode the shares of other
  participants (never the group's members) who agreed with it come first, as "k in 20", so that
  cutting a long statement never cuts them: everyone's, and that of the participants who vote
  most like the member (polis_votes.summarise). In new-statement mode, the statement alone."""
  lines = []
  if everyone_agree_share is not None:
    lines.append(f"Everyone: {share_count(everyone_agree_share)} in {SHARE_PARTS} agree.")
  if similar_agree_share is not None:
    lines.append(f"People like me: {share_count(similar_agree_share)} in {SHARE_PARTS} agree.")
  return " ".join(lines + [_sentence(statement)])


# Shares are written as "k in SHARE_PARTS". Twentieths, not tenths: a logistic model on the three
# shares rounded to tenths loses up to 0.02 AUC (median 0.005) on the bundled conversations'
# held-out votes against the unrounded shares; rounded to twentieths, about none (README,
# "Real votes").
SHARE_PARTS = 20


def share_count(share: float) -> int:
  """`share` (clipped to [0, 1]) as a whole number of SHARE_PARTS."""
  return int(round(SHARE_PARTS * min(max(float(share), 0.0), 1.0)))


def _sentence(text: str) -> str:
  return " ".join(text.split())


# ---- ids ----------------------------------------------------------------------------------

def policy_prompt_ids(vocabulary, question: str, opinions: Sequence[str]) -> list[int]:
  """What the policy is served: the start token, then the prompt ids (as trained)."""
  return [POLICY_START_ID] + list(vocabulary.encode(sft_prompt(question, opinions)))


def policy_target_ids(vocabulary, statement: str) -> list[int]:
  """A statement as the policy is trained to write it: its ids, then EOS."""
  return list(vocabulary.encode(sft_target(statement))) + [vocabulary.eos_id]


def rm_prefix_ids(vocabulary, prefix_text: str, max_length: int | None = None) -> list[int]:
  """A member prefix's ids (rm_prefix or polis_rm_prefix text), cut at the end to max_length
  as the RM feature converter cuts task inputs."""
  ids = list(vocabulary.encode(prefix_text))
  return ids if max_length is None else ids[:max_length]


def rm_member_ids(vocabulary, question: str, member_opinion: str,
                  max_length: int | None = None) -> list[int]:
  return rm_prefix_ids(vocabulary, rm_prefix(question, member_opinion), max_length)


def rm_candidate_ids(vocabulary, candidate: str, max_length: int | None = None) -> list[int]:
  """A candidate's ids exactly as the RM tasks produce them (suffix + EOS); cut to max_length
  keeping the EOS, as seqio's append_eos_after_trim does."""
  ids = list(vocabulary.encode(rm_suffix(candidate)))
  if max_length is not None:
    ids = ids[:max_length - 1]
  return ids + [vocabulary.eos_id]


def rm_statement_head_ids(vocabulary) -> tuple[int, ...]:
  """The ids a candidate's RM suffix starts with; the consensus program puts the policy's
  generated ids after them on device."""
  return tuple(vocabulary.encode(RM_STATEMENT_HEAD))
