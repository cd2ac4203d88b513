"""Lazy reading of safetensors files (memory-mapped; bfloat16 through ml_dtypes).

Only the header is parsed up front, so a 70B checkpoint's shards are read one tensor at a time.
"""
import json
import pathlib
import struct

import ml_dtypes
import numpy as np

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
# The format's own limit on the header; a larger claim is refused before anything is read.
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
  """A safetensors file that breaks the format; the message names the file and tensor."""


def _check_entry(path: pathlib.Path, name: str, entry, data_size: int) -> tuple[int, int]:
  where = f"{path}: tensor {name!r}"
  if not isinstance(entry, dict):
    raise SafetensorsError(f"{where}: its header entry is not an object")
  dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
  if dtype not in _DTYPES:
    raise SafetensorsError(f"{where}: unsupported dtype {dtype!r} (supported: "
                           f"{', '.join(_DTYPES)})")
  if not isinstance(shape, list) or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
    raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative integers")
  if not (isinstance(offsets, list) and len(offsets) == 2 and all(
      isinstance(n, int) and not isinstance(n, bool) for n in offsets)):
    raise SafetensorsError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
  begin, end = offsets
  if not 0 <= begin <= end <= data_size:
    raise SafetensorsError(f"{where}: data_offsets [{begin}, {end}] fall outside the "
                           f"{data_size} data bytes the file holds (truncated?)")
  expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
  if end - begin != expected:
    raise SafetensorsError(f"{where}: {end - begin} bytes for a {dtype} tensor of shape "
                           f"{shape}, which needs {expected}")
  return begin, end


class SafetensorsShard:
  """One .safetensors file: names, shapes, and tensors on demand.

  The header is checked against the file before anything else is read: its length against the
  file's size, every tensor's byte range against the data the file holds and against its dtype
  and shape, and no two tensors may share bytes.
  """

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)
    file_size = self.path.stat().st_size
    with open(self.path, "rb") as f:
      prefix = f.read(8)
      if len(prefix) != 8:
        raise SafetensorsError(f"{self.path}: not a safetensors file (shorter than its 8-byte "
                               "header length)")
      (header_len,) = struct.unpack("<Q", prefix)
      if header_len > min(MAX_HEADER_BYTES, file_size - 8):
        raise SafetensorsError(f"{self.path}: header length {header_len} exceeds the file "
                               f"({file_size} bytes) or the format's limit")
      try:
        header = json.loads(f.read(header_len).decode("utf-8"))
      except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise SafetensorsError(f"{self.path}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
      raise SafetensorsError(f"{self.path}: the header is not a JSON object")
    header.pop("__metadata__", None)
    self._data_start = 8 + header_len
    data_size = file_size - self._data_start
    ranges = sorted((_check_entry(self.path, name, entry, data_size), name)
                    for name, entry in header.items())
    for ((_, previous_end), previous), ((begin, end), name) in zip(ranges, ranges[1:]):
      if begin < previous_end and end > begin:
        raise SafetensorsError(f"{self.path}: tensors {previous!r} and {name!r} overlap "
                               "(each would read the other's bytes)")
    self._entries = header
    self._mmap = None

  def names(self):
    return list(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def dtype(self, name: str) -> str:
    return self._entries[name]["dtype"]

  def read(self, name: str) -> np.ndarray:
    entry = self._entries[name]
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    begin, end = entry["data_offsets"]
    raw = self._mmap[self._data_start + begin:self._data_start + end]
    return np.frombuffer(raw, dtype=_DTYPES[entry["dtype"]]).reshape(entry["shape"])


class SafetensorsCheckpoint:
  """All shards of a Hugging Face checkpoint directory, indexed by tensor name."""

  def __init__(self, directory: pathlib.Path):
    directory = pathlib.Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
      raise SafetensorsError(f"{directory}: no *.safetensors files")
    self._shard_of = {}
    for file in files:
      shard = SafetensorsShard(file)
      for name in shard.names():
        if name in self._shard_of:
          raise SafetensorsError(f"{directory}: tensor {name} appears in both "
                           f"{self._shard_of[name].path.name} and {file.name}")
        self._shard_of[name] = shard

  def __contains__(self, name: str) -> bool:
    return name in self._shard_of

  def names(self):
    return list(self._shard_of)

  def where(self, name: str) -> pathlib.Path:
    return self._shard_of[name].path

  def shape(self, name: str) -> tuple[int, ...]:
    return self._shard_of[name].shape(name)

  def dtype(self, name: str) -> str:
    return self._shard_of[name].dtype(name)

  def read(self, name: str) -> np.ndarray:
    return self._shard_of[name].read(name)


def write(path: pathlib.Path, tensors: dict[str, np.ndarray]) -> None:
  """Writes float32 tensors as one safetensors file, via a temp file so a crash leaves none."""
  path = pathlib.Path(path)
  header, offset, blobs = {}, 0, []
  for name, array in tensors.items():
    data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
    header[name] = {"dtype": "F32", "shape": list(array.shape),
                    "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
    blobs.append(data)
  header_bytes = json.dumps(header).encode()
  header_bytes += b" " * (-len(header_bytes) % 8)  # Keeps the data 8-byte aligned.
  tmp = path.with_suffix(path.suffix + ".tmp")
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(header_bytes)))
    f.write(header_bytes)
    for blob in blobs:
      f.write(blob)
  tmp.replace(path)
