"""The project's SentencePiece vocabulary: trained on its own corpora, cached, loaded for seqio.

Ids follow seqio's convention: pad=0, eos=1, unk=2, no bos. Byte fallback keeps rare
characters (the Chinese Polis conversation) representable without unk.
"""
import io
import os
import pathlib
import tempfile
from collections.abc import Iterable

import numpy as np
import sentencepiece as spm
import seqio

from consensus_jax.data import polis
from consensus_jax.data import question_bank
from consensus_jax.data import synthetic

DEFAULT_VOCAB_SIZE = 8000
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_SYNTHETIC_GROUPS = 300  # enough to cover the templates' vocabulary
# Bump when corpus_texts changes, so cached models trained on the old corpus are not reused.
_CORPUS_VERSION = "v1"
_MAX_SENTENCES = 60_000  # sampled corpus size; keeps training to a few seconds


def corpus_texts(seed: int = 0) -> list[str]:
  """Questions and their statements, synthetic opinions and candidates, Polis comments."""
  questions = question_bank.load_questions()
  texts = [t for q in questions for t in (q.text, q.affirming_statement, q.negating_statement)]
  for round_ in synthetic.generate_split(questions, "train", _SYNTHETIC_GROUPS, seed):
    texts += [o.text for o in round_.opinions] + [c.text for c in round_.candidates]
  for conversation in polis.load_all().values():
    texts.append(conversation.topic)
    texts += [c.text for c in conversation.comments.values()]
  return [" ".join(t.split()) for t in texts if t.strip()]


def train_sentencepiece(texts: Iterable[str], model_path: str | os.PathLike, *,
                        vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = 0) -> pathlib.Path:
  """Trains a unigram model on (a sample of) `texts`, written atomically to `model_path`."""
  texts = list(texts)
  if len(texts) > _MAX_SENTENCES:
    keep = np.random.default_rng(seed).choice(len(texts), _MAX_SENTENCES, replace=False)
    texts = [texts[i] for i in np.sort(keep)]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
      model_type="unigram", character_coverage=0.9995, byte_fallback=True,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      hard_vocab_limit=False, num_threads=2,
      minloglevel=2)
  model_path = pathlib.Path(model_path)
  model_path.parent.mkdir(parents=True, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=model_path.parent, suffix=".tmp")
  with os.fdopen(fd, "wb") as f:
    f.write(model.getvalue())
  os.replace(temp, model_path)
  return model_path


def load_vocabulary(model_path: str | os.PathLike) -> seqio.SentencePieceVocabulary:
  return seqio.SentencePieceVocabulary(str(model_path))


def get_vocabulary(cache_dir: str | os.PathLike, vocab_size: int = DEFAULT_VOCAB_SIZE,
                   seed: int = 0) -> seqio.SentencePieceVocabulary:
  """The project vocabulary, trained into `cache_dir` on first use and loaded thereafter."""
  model_path = pathlib.Path(cache_dir) / (
      f"consensus_sp{vocab_size}_seed{seed}_{_CORPUS_VERSION}.model")
  if not model_path.is_file():
    train_sentencepiece(corpus_texts(seed), model_path, vocab_size=vocab_size, seed=seed)
  return load_vocabulary(model_path)
