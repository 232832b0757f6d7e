"""Caption tokenizers: text -> fixed-length int32 ids, 0 = padding.

Two implementations behind one interface (`encode(text) -> [text_len] int32`, `vocab_size`):

- `SentencePieceTokenizer(model_path)`: a SentencePiece model, e.g. the Gemma tokenizer that
  SigLIP2's text tower uses (its pad id is 0). Needs the optional `sentencepiece` package.
- `ByteTokenizer()`: a deterministic byte-level fallback for the bundled tiny runs and tests:
  ids 0 = pad, 1 = bos (unused), 2 = eos, 3 + b for UTF-8 byte b; vocab_size 259.

Both append the tokenizer's eos id and truncate to `text_len` (the eos is kept as the last
token of a truncated caption). Picklable: a SentencePiece model is reloaded from its path in
each Grain worker process.
"""
from __future__ import annotations

import numpy as np

TEXT_LEN = 64
PAD_ID = 0


class ByteTokenizer:
  """UTF-8 bytes -> ids (3 + byte), eos 2, pad 0; vocab_size 259."""

  BOS_ID, EOS_ID, OFFSET = 1, 2, 3
  vocab_size = 256 + OFFSET

  def __init__(self, text_len: int = TEXT_LEN):
    self.text_len = text_len

  def ids(self, text: str) -> list[int]:
    return [b + self.OFFSET for b in text.encode("utf-8")] + [self.EOS_ID]

  def encode(self, text: str) -> np.ndarray:
    """text -> [text_len] int32."""
    return _fit(self.ids(text), self.text_len)

  def decode(self, ids) -> str:
    data = bytes(int(i) - self.OFFSET for i in ids if int(i) >= self.OFFSET)
    return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer:
  """A SentencePiece model file -> ids, eos appended, padded with 0 to text_len."""

  def __init__(self, model_path: str, text_len: int = TEXT_LEN):
    self.model_path = model_path
    self.text_len = text_len
    self._sp = None
    self._load()

  def _load(self):
    try:
      import sentencepiece  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError("a SentencePiece caption tokenizer needs `pip install sentencepiece`; "
                        "or use tokenizer='bytes'") from e
    self._sp = sentencepiece.SentencePieceProcessor(model_file=self.model_path)

  @property
  def vocab_size(self) -> int:
    return int(self._sp.get_piece_size())

  def encode(self, text: str) -> np.ndarray:
    ids = list(self._sp.encode(text)) + [int(self._sp.eos_id())]
    return _fit(ids, self.text_len)

  def __getstate__(self):
    return {"model_path": self.model_path, "text_len": self.text_len}

  def __setstate__(self, state):
    self.model_path, self.text_len = state["model_path"], state["text_len"]
    self._load()


def _fit(ids: list[int], text_len: int) -> np.ndarray:
  out = np.full(text_len, PAD_ID, np.int32)
  if len(ids) > text_len:
    ids = ids[:text_len - 1] + ids[-1:]  # keep eos
  out[:len(ids)] = ids
  return out


def make_tokenizer(spec: str, text_len: int = TEXT_LEN):
  """'bytes' -> ByteTokenizer; anything else is a SentencePiece model path."""
  if spec in ("bytes", "", None):
    return ByteTokenizer(text_len)
  return SentencePieceTokenizer(spec, text_len)
