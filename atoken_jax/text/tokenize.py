"""Caption -> fixed-length token ids for the SigLIP2 text tower: [N, 64] int32, 0 = pad.

Preprocessing (`canonicalize`) follows the AToken release, which cleans captions like OpenCLIP's
SigLIP tokenizer (big_vision's `canonicalize_text`): HTML entities unescaped, `_` -> space,
ASCII punctuation removed, lower-cased, whitespace collapsed. (SigLIP2's own big_vision
pipeline only lower-cases; pass strip_punctuation=False for that. The release also runs `ftfy`
first, which we skip to stay dependency-free: it only repairs mojibake.)

Ids as SigLIP2's big_vision pipeline `tok(length=64, bos="no", eos="sticky")` makes them: no BOS,
an EOS after the caption, padded with the pad id, and a caption too long keeps its EOS as the
last token. Two tokenizers:
  - `SentencePieceTokenizer`: the user's Gemma `tokenizer.model` (vocab 256000, pad 0, EOS 1),
    as SigLIP2 and AToken use; needs the `sentencepiece` package.
  - `ByteTokenizer`: UTF-8 bytes, vocab 258 (pad 0, EOS 1, byte b -> b + 2), for the tiny CPU
    preset, which has no pretrained text tower to match.
"""
from __future__ import annotations

import abc

import html
import string
from typing import Sequence

import numpy as np

PAD_ID = 0
EOS_ID = 1
MAX_LEN = 64
_NO_PUNCT = str.maketrans("", "", string.punctuation)


def canonicalize(text: str, *, strip_punctuation: bool = True) -> str:
  """'A photo of the_Cat, &amp; a dog!' -> 'a photo of the cat a dog'."""
  text = html.unescape(html.unescape(text)).strip()
  if strip_punctuation:
    text = text.replace("_", " ").translate(_NO_PUNCT)
  return " ".join(text.lower().split())


def to_fixed_length(seqs: Sequence[Sequence[int]], max_len: int = MAX_LEN, *,
                    eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> np.ndarray:
  """Token lists -> [N, max_len] int32: tokens + EOS, padded with pad_id; a sequence longer
  than max_len - 1 is cut to its first max_len - 1 tokens + EOS ("sticky" EOS)."""
  out = np.full((len(seqs), max_len), pad_id, np.int32)
  for i, s in enumerate(seqs):
    s = list(s)[:max_len - 1] + [eos_id]
    out[i, :len(s)] = s
  return out


class _Tokenizer(abc.ABC):
  """Shared behaviour: canonicalize, encode, fix the length; decode stops at EOS. Subclasses
  provide the vocabulary (`_encode` / `_decode`)."""
  vocab_size: int
  pad_id: int = PAD_ID
  eos_id: int = EOS_ID

  def __init__(self, max_len: int = MAX_LEN, strip_punctuation: bool = True):
    self.max_len = max_len
    self.strip_punctuation = strip_punctuation

  @abc.abstractmethod
  def _encode(self, texts: list[str]) -> list[list[int]]:
    """Canonical texts -> token id lists (no EOS, no padding)."""

  @abc.abstractmethod
  def _decode(self, ids: list[int]) -> str:
    """Token ids (no EOS, no padding) -> text."""

  def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
    """texts (N strings, or one) -> ids [N, max_len] int32."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    clean = [canonicalize(t, strip_punctuation=self.strip_punctuation) for t in texts]
    return to_fixed_length(self._encode(clean), self.max_len, eos_id=self.eos_id,
                           pad_id=self.pad_id)

  def decode(self, ids: np.ndarray) -> list[str]:
    """ids [N, L] -> N strings (up to each row's first EOS, padding dropped)."""
    out = []
    for row in np.asarray(ids).reshape(-1, np.shape(ids)[-1]).tolist():
      row = row[:row.index(self.eos_id)] if self.eos_id in row else row
      out.append(self._decode([t for t in row if t != self.pad_id]))
    return out


class ByteTokenizer(_Tokenizer):
  """UTF-8 bytes as tokens: vocab 258 = pad 0, EOS 1, byte b -> b + 2."""
  vocab_size = 258
  _OFFSET = 2

  def _encode(self, texts):
    return [[b + self._OFFSET for b in t.encode("utf-8")] for t in texts]

  def _decode(self, ids):
    return bytes(t - self._OFFSET for t in ids if t >= self._OFFSET).decode("utf-8", "replace")


class SentencePieceTokenizer(_Tokenizer):
  """A SentencePiece model (Gemma's `tokenizer.model` for SigLIP2); pad and EOS ids are the
  model's own (Gemma: 0 and 1). Picklable (keeps the model bytes), so data workers can hold it.
  """

  def __init__(self, model: str | bytes, max_len: int = MAX_LEN,
               strip_punctuation: bool = True):
    super().__init__(max_len, strip_punctuation)
    if isinstance(model, (bytes, bytearray)):
      self._proto = bytes(model)
    else:
      with open(model, "rb") as f:
        self._proto = f.read()
    sp = self._processor()
    self.vocab_size = sp.get_piece_size()
    self.pad_id, self.eos_id = sp.pad_id(), sp.eos_id()
    if self.pad_id < 0 or self.eos_id < 0:
      raise ValueError(f"SentencePiece model defines no pad ({self.pad_id}) or EOS "
                       f"({self.eos_id}) id; SigLIP2's Gemma model has pad 0 and EOS 1")

  def _processor(self):
    if getattr(self, "_sp", None) is None:
      try:
        import sentencepiece  # pylint: disable=import-outside-toplevel
      except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the Gemma tokenizer needs sentencepiece: pip install "
                          "'sentencepiece>=0.2.0'") from e
      self._sp = sentencepiece.SentencePieceProcessor(model_proto=self._proto)
    return self._sp

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_sp"}

  def _encode(self, texts):
    return self._processor().encode(texts, out_type=int)

  def _decode(self, ids):
    return self._processor().decode(ids)


def get_tokenizer(spec: str, max_len: int = MAX_LEN, strip_punctuation: bool = True):
  """"bytes" -> ByteTokenizer; a path to a SentencePiece .model -> SentencePieceTokenizer."""
  if spec == "bytes":
    return ByteTokenizer(max_len, strip_punctuation)
  return SentencePieceTokenizer(spec, max_len, strip_punctuation)
