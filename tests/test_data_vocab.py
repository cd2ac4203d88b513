"""vocab.py: the project SentencePiece model, trained cheaply, cached, usable from seqio."""
import time
import unicodedata

import pytest
import sentencepiece as spm

from consensus_jax.data import polis
from consensus_jax.data import vocab


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("vocab_cache")


@pytest.fixture(scope="module")
def trained(cache_dir):
  start = time.perf_counter()
  vocabulary = vocab.get_vocabulary(cache_dir)
  return vocabulary, time.perf_counter() - start


def test_default_vocabulary_has_seqio_ids_and_size(trained, cache_dir):
  vocabulary, seconds = trained
  assert seconds < 30, f"training took {seconds:.1f}s"
  assert vocabulary.vocab_size == vocab.DEFAULT_VOCAB_SIZE == 8000
  assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)
  (model_file,) = cache_dir.glob("*.model")
  processor = spm.SentencePieceProcessor(model_file=str(model_file))
  assert [processor.id_to_piece(i) for i in (0, 1, 2)] == ["<pad>", "</s>", "<unk>"]
  assert processor.bos_id() == -1


def test_round_trips_english_and_chinese_without_unk(trained, shared_data_dir):
  vocabulary, _ = trained
  uberx = polis.load_conversation(shared_data_dir / "polis" / "vtaiwan.uberx")
  texts = ["Should we raise taxes on the rich?", uberx.topic,
           next(c.text for c in uberx.comments.values() if len(c.text) > 40)]
  for text in texts:
    ids = vocabulary.encode(text)
    assert vocabulary.unk_id not in ids
    # SentencePiece applies NFKC (e.g. a full-width comma becomes ",") and folds whitespace.
    assert vocabulary.decode(ids) == " ".join(unicodedata.normalize("NFKC", text).split())
  # Trained on the project's text: a common debate sentence takes few pieces.
  assert len(vocabulary.encode("We should raise taxes on the rich.")) <= 10


def test_second_call_loads_the_cached_model(trained, cache_dir):
  (model_file,) = cache_dir.glob("*.model")
  before = model_file.stat().st_mtime_ns
  start = time.perf_counter()
  again = vocab.get_vocabulary(cache_dir)
  assert time.perf_counter() - start < 2
  assert model_file.stat().st_mtime_ns == before
  assert again.encode("fairness and cost") == trained[0].encode("fairness and cost")
