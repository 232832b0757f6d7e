"""The on-disk record: one sample as bytes, in a format that is safe to read from untrusted files.

Layout of one record (all integers little-endian):

  b"ATKR" | u8 version (1) | u32 header length | header (UTF-8 JSON) | payload bytes

The header is {"kind", "name", "caption", "fields": {key: spec}} where each spec points into the
payload: {"off", "len"} and, for arrays, {"dtype", "shape"}; lists of blobs are stored as one
spec per item, {"list": [spec, ...]}. Nothing is unpickled; dtypes come from a whitelist and
every offset, length and shape is checked, so a corrupt record raises `RecordError`.

Kinds (see `decode.py`): "image" {bytes}, "video" {bytes}, "voxels" {coords [N,3] uint8,
src [N,3] uint8 (view, patch row, patch col; 255 = no view), views [V] PNG blobs,
w2c [V,4,4] float32, fov_x [V] float32}.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Optional, Union

import numpy as np

MAGIC = b"ATKR"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")
_DTYPES = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32",
           "float64", "bool"}
_MAX_HEADER_BYTES = 1 << 20

Field = Union[bytes, np.ndarray, list]


class RecordError(ValueError):
  """A record that cannot be parsed (corrupt, truncated, or not one of ours)."""


def encode_record(kind: str, name: str, fields: dict[str, Field],
                  caption: Optional[Union[str, list[str]]] = None) -> bytes:
  """Serialises one sample.

  Args:
    kind: "image", "video" or "voxels".
    name: where the sample came from (a path or an id), used in bad-data reports.
    fields: bytes, numpy arrays (numeric dtypes only) or lists of bytes.
    caption: None, one string or several strings.

  Returns:
    The record bytes.
  """
  chunks, specs, offset = [], {}, 0

  def put(value) -> dict[str, Any]:
    nonlocal offset
    if isinstance(value, (bytes, bytearray, memoryview)):
      data, spec = bytes(value), {}
    elif isinstance(value, np.ndarray):
      if value.dtype.name not in _DTYPES:
        raise ValueError(f"record arrays must have a numeric dtype, got {value.dtype}")
      data = np.ascontiguousarray(value).tobytes()
      spec = {"dtype": value.dtype.name, "shape": list(value.shape)}
    else:
      raise ValueError(f"record fields must be bytes, arrays or lists of bytes, got "
                       f"{type(value).__name__}")
    spec.update(off=offset, len=len(data))
    chunks.append(data)
    offset += len(data)
    return spec

  for key, value in fields.items():
    specs[key] = {"list": [put(v) for v in value]} if isinstance(value, list) else put(value)
  header = json.dumps({"kind": kind, "name": name, "caption": caption, "fields": specs},
                      separators=(",", ":")).encode("utf-8")
  return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(chunks)


def _read(payload: memoryview, spec: Any, key: str) -> Field:
  if not isinstance(spec, dict):
    raise RecordError(f"field {key!r}: bad spec")
  if "list" in spec:
    if not isinstance(spec["list"], list):
      raise RecordError(f"field {key!r}: bad list spec")
    return [_read(payload, s, key) for s in spec["list"]]
  off, length = spec.get("off"), spec.get("len")
  if not (isinstance(off, int) and isinstance(length, int) and 0 <= off
          and 0 <= length and off + length <= len(payload)):
    raise RecordError(f"field {key!r}: span [{off}, +{length}) outside the payload "
                      f"({len(payload)} bytes): truncated record?")
  data = payload[off:off + length]
  if "dtype" not in spec:
    return bytes(data)
  dtype, shape = spec["dtype"], spec.get("shape")
  if dtype not in _DTYPES or not isinstance(shape, list) or not all(
      isinstance(s, int) and s >= 0 for s in shape):
    raise RecordError(f"field {key!r}: bad dtype/shape {dtype!r} {shape!r}")
  if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != length:
    raise RecordError(f"field {key!r}: {length} bytes do not hold {dtype}{shape}")
  return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def decode_record(data: bytes) -> dict[str, Any]:
  """Parses `encode_record` output -> {"kind", "name", "caption", **fields}.

  Raises:
    RecordError: the bytes are not a valid record.
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise RecordError(f"a record must be bytes, got {type(data).__name__}")
  view = memoryview(data)
  if len(view) < _PREFIX.size:
    raise RecordError(f"record of {len(view)} bytes is too short")
  magic, version, header_len = _PREFIX.unpack_from(view)
  if magic != MAGIC or version != VERSION:
    raise RecordError(f"not an atoken record (magic {bytes(magic)!r}, version {version})")
  if header_len > min(_MAX_HEADER_BYTES, len(view) - _PREFIX.size):
    raise RecordError(f"header length {header_len} exceeds the record: truncated record?")
  try:
    header = json.loads(bytes(view[_PREFIX.size:_PREFIX.size + header_len]).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise RecordError(f"unreadable header: {e}") from None
  if not isinstance(header, dict) or not isinstance(header.get("fields"), dict):
    raise RecordError("header lacks 'fields'")
  kind, name, caption = header.get("kind"), header.get("name"), header.get("caption")
  if not isinstance(kind, str) or not isinstance(name, str):
    raise RecordError("header lacks 'kind' or 'name'")
  if caption is not None and not isinstance(caption, str) and not (
      isinstance(caption, list) and all(isinstance(c, str) for c in caption)):
    raise RecordError("caption must be a string or a list of strings")
  payload = view[_PREFIX.size + header_len:]
  out = {"kind": kind, "name": name, "caption": caption}
  for key, spec in header["fields"].items():
    if key in out:
      raise RecordError(f"field name {key!r} is reserved")
    out[key] = _read(payload, spec, key)
  return out
