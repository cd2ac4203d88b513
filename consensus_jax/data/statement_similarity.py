"""Bag-of-words cosine similarity between a Polis conversation's statements.

It says which of a member's other votes speak to a given statement: the reward model's context
is drawn from the most similar ones (polis_examples.member_prefix), and the text-only peers
(studies/polis_peers) score a statement by its similarity to what the member agreed and
disagreed with.
"""
import re

import numpy as np

from consensus_jax.data import polis

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def tokens(text: str) -> list[str]:
  """Lower-cased words; a CJK run counts one token per character (no spaces to split on)."""
  found = []
  for word in re.findall(r"\w+", text.lower()):
    found += list(word) if _CJK.search(word) else [word]
  return found


def bag_of_words_C(conversation: polis.Conversation) -> np.ndarray:
  """L2-normalised word counts [statements, vocabulary], rows in conversation.comment_ids order."""
  vocabulary: dict[str, int] = {}
  rows = []
  for comment_id in conversation.comment_ids:
    counts: dict[int, float] = {}
    for token in tokens(conversation.comments[int(comment_id)].text):
      index = vocabulary.setdefault(token, len(vocabulary))
      counts[index] = counts.get(index, 0.0) + 1.0
    rows.append(counts)
  bow_CV = np.zeros((len(rows), max(1, len(vocabulary))), np.float32)
  for c, counts in enumerate(rows):
    for index, count in counts.items():
      bow_CV[c, index] = count
  norms = np.linalg.norm(bow_CV, axis=1, keepdims=True)
  return bow_CV / np.where(norms == 0, 1.0, norms)


def similarity_CC(conversation: polis.Conversation) -> np.ndarray:
  """[statements, statements] cosine similarity of their bags of words (0 for an empty text)."""
  bow_CV = bag_of_words_C(conversation)
  return bow_CV @ bow_CV.T
