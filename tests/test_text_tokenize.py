"""Caption tokenisation: SigLIP2/AToken cleaning, sticky EOS, pad 0, byte and SentencePiece."""
import io
import pickle

import numpy as np
import pytest

from atoken_jax.text import tokenize

CAPTIONS = ["a photo of a cat sitting on a red sofa", "two dogs play in the snow",
            "a bowl of fresh fruit on a wooden table", "a man rides a bicycle down the street",
            "the city skyline at night with bright lights", "a small boat on a calm lake",
            "children playing football in a park", "a plate of pasta with tomato sauce"]


def test_canonicalize_lowercases_and_strips_punctuation_like_the_release():
  assert tokenize.canonicalize("  A Photo of the_Cat, &amp;amp; a DOG!! ") == \
      "a photo of the cat a dog"
  assert tokenize.canonicalize("Café — naïve") == "café — naïve"  # only ASCII punctuation
  assert tokenize.canonicalize("A Cat, sleeping.", strip_punctuation=False) == "a cat, sleeping."


def test_fixed_length_appends_eos_pads_with_zero_and_keeps_eos_when_cut():
  ids = tokenize.to_fixed_length([[5, 6], [], [7] * 3, [8] * 10], max_len=4)
  np.testing.assert_array_equal(ids, [[5, 6, 1, 0], [1, 0, 0, 0], [7, 7, 7, 1], [8, 8, 8, 1]])
  assert ids.dtype == np.int32


def test_byte_tokenizer_shapes_ids_and_round_trip():
  tok = tokenize.get_tokenizer("bytes")
  ids = tok(["A Cat!", "naïve café", "x" * 100])
  assert ids.shape == (3, 64) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < tok.vocab_size == 258
  np.testing.assert_array_equal(ids[0, :6], [ord(c) + 2 for c in "a cat"] + [1])
  assert not ids[0, 6:].any()
  assert ids[2, -1] == tokenize.EOS_ID and (ids[2] != 0).all()
  assert tok.decode(ids) == ["a cat", "naïve café", "x" * 63]
  np.testing.assert_array_equal(tok("one caption"), tok(["one caption"]))


@pytest.fixture(scope="module")
def sp_model():
  """A tiny SentencePiece model trained here, with Gemma's special ids (pad 0, EOS 1, BOS 2,
  unk 3)."""
  spm = pytest.importorskip("sentencepiece")
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CAPTIONS * 4), model_writer=buf, vocab_size=60, model_type="bpe",
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2)
  return buf.getvalue()


def test_sentencepiece_tokenizer_matches_the_model_with_sticky_eos(sp_model):
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  ref = spm.SentencePieceProcessor(model_proto=sp_model)
  tok = tokenize.SentencePieceTokenizer(sp_model, max_len=24)
  assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 60)
  texts = ["A photo of a Cat, on the sofa.", " ".join(CAPTIONS)]
  ids = tok(texts)
  assert ids.shape == (2, 24) and ids.dtype == np.int32
  short = ref.encode("a photo of a cat on the sofa") + [1]
  assert 2 not in short  # no BOS
  np.testing.assert_array_equal(ids[0, :len(short)], short)
  assert not ids[0, len(short):].any()
  np.testing.assert_array_equal(ids[1], ref.encode(" ".join(CAPTIONS))[:23] + [1])
  assert tok.decode(ids[:1]) == ["a photo of a cat on the sofa"]


def test_sentencepiece_tokenizer_from_file_and_pickles(sp_model, tmp_path):
  path = tmp_path / "tokenizer.model"
  path.write_bytes(sp_model)
  tok = tokenize.get_tokenizer(str(path))
  clone = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(tok(CAPTIONS[:3]), clone(CAPTIONS[:3]))
  assert tok(CAPTIONS[:3]).shape == (3, 64)


def test_sentencepiece_model_without_pad_is_refused():
  spm = pytest.importorskip("sentencepiece")
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS * 4), model_writer=buf,
                                 vocab_size=50, minloglevel=2)  # default: pad_id = -1
  with pytest.raises(ValueError, match="pad"):
    tokenize.SentencePieceTokenizer(buf.getvalue())
