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


class SafetensorsShard:
  """One .safetensors file: names, shapes, and tensors on demand."""

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)
    with open(self.path, "rb") as f:
      prefix = f.read(8)
      if len(prefix) != 8:
        raise ValueError(f"{self.path}: not a safetensors file (shorter than its 8-byte header)")
      (header_len,) = struct.unpack("<Q", prefix)
      try:
        header = json.loads(f.read(header_len))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{self.path}: unreadable safetensors header ({e})") from e
    header.pop("__metadata__", None)
    self._entries = header
    self._data_start = 8 + header_len
    self._mmap = None

  def names(self):
    return list(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name]["shape"])

  def read(self, name: str) -> np.ndarray:
    entry = self._entries[name]
    if entry["dtype"] not in _DTYPES:
      raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {entry['dtype']}")
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
      raise FileNotFoundError(f"{directory}: no *.safetensors files")
    self._shard_of = {}
    for file in files:
      shard = SafetensorsShard(file)
      for name in shard.names():
        if name in self._shard_of:
          raise ValueError(f"{directory}: tensor {name} appears in both "
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
