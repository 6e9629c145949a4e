"""The file format of staged models (``.wzs``): the models a producer staged together, in one file.

::

    bytes 0-7     magic ``WZSTAGE1``
    bytes 8-15    two uint32 (little-endian): length of the directory JSON, 0 (reserved)
    directory     JSON {"body_bytes": B, "models": {fingerprint: [offset, head length, meta length,
                  section length]}}; offsets count from the body's start
    body          from the next 64-byte boundary: one section per model, each 64-byte aligned:
        head      JSON {"receipt": the Receipt, "arrays": {name: [dtype, shape, offset]}}
        meta      JSON {"layout": WeightLayout records, "record": the StagedRecord,
                  "snapshots": one dict per snapshot k (NaN as null)}
        arrays    from the next 64-byte boundary after head and meta: raw little-endian bytes,
                  each 64-byte aligned (offsets count from there)

A file is complete when its length is the body's start plus ``body_bytes``: a file cut short
(a power cut before the sync) is not read as staged. Reading one model reads the directory
(one read of the file's first 4 KiB for ordinary groups) and then that model's section only.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"WZSTAGE1"
_LENGTHS = struct.Struct("<II")
_PREFIX = len(MAGIC) + _LENGTHS.size
_ALIGN = 64
_FIRST_READ = 1 << 12  # holds the directory of a group of a few dozen models


@dataclass(frozen=True)
class Section:
    """One model's part of a staged file, ready to be written."""

    fingerprint: str
    head: bytes
    meta: bytes
    arrays: dict  # name -> contiguous array

    @classmethod
    def of(cls, fingerprint: str, receipt: dict, meta: bytes, arrays: dict) -> "Section":
        """The section of one model: its receipt (as a dict), meta JSON and arrays."""
        arrays = {name: np.ascontiguousarray(values) for name, values in arrays.items()}
        directory, offset = {}, 0
        for name, values in arrays.items():
            directory[name] = [values.dtype.str, list(values.shape), offset]
            offset += aligned(values.nbytes)
        head = json.dumps({"receipt": receipt, "arrays": directory}, sort_keys=True, allow_nan=False).encode()
        return cls(fingerprint, head, meta, arrays)

    @property
    def arrays_start(self) -> int:
        """Where the arrays begin, from the section's start."""
        return aligned(len(self.head) + len(self.meta))

    @property
    def length(self) -> int:
        """The section's length in bytes (64-byte aligned)."""
        return self.arrays_start + sum(aligned(values.nbytes) for values in self.arrays.values())


def aligned(n: int) -> int:
    """``n`` rounded up to the format's 64-byte alignment."""
    return -(-n // _ALIGN) * _ALIGN


def write(handle, sections: list[Section]) -> None:
    """Write a staged file of ``sections`` to the open binary ``handle``, streaming the arrays."""
    entries, offset = {}, 0
    for section in sections:
        entries[section.fingerprint] = [offset, len(section.head), len(section.meta), section.length]
        offset += section.length
    directory = json.dumps({"body_bytes": offset, "models": entries}, sort_keys=True).encode()
    handle.write(MAGIC + _LENGTHS.pack(len(directory), 0) + directory)
    handle.write(bytes(aligned(_PREFIX + len(directory)) - _PREFIX - len(directory)))
    for section in sections:
        handle.write(section.head + section.meta + bytes(section.arrays_start - len(section.head) - len(section.meta)))
        for values in section.arrays.values():
            handle.write(values.view(np.uint8).reshape(-1).data)
            handle.write(bytes(aligned(values.nbytes) - values.nbytes))


@dataclass(frozen=True)
class Entry:
    """One model read back from a staged file: its head, and its meta and arrays when asked for."""

    head: dict
    meta: dict | None
    data: memoryview | None  # the section's arrays region (writable, for numpy views)

    def array(self, name: str) -> np.ndarray:
        """A stored array, as a view of the bytes read."""
        dtype, shape, offset = self.head["arrays"][name]
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.data, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)


def read(path, fingerprint: str, *, meta: bool, arrays: bool) -> Entry:
    """The entry of ``fingerprint`` in the staged file at ``path``. KeyError when the file does not
    hold it; ValueError when it is not a complete staged file; OSError (FileNotFoundError) as raised."""
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        key = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        if key not in _DIRECTORIES:  # the models of a group are mostly read one after another
            if len(_DIRECTORIES) >= 16:
                _DIRECTORIES.clear()
            _DIRECTORIES[key] = _directory(handle, status.st_size)
        body, models = _DIRECTORIES[key]
        offset, head_length, meta_length, section_length = models[fingerprint]
        wanted = section_length if arrays else head_length + (meta_length if meta else 0)
        data = bytearray(wanted)
        if os.preadv(handle.fileno(), [data], body + offset) != wanted:
            raise ValueError("the file changed while it was read")
    view = memoryview(data)
    head = json.loads(bytes(view[:head_length]))
    meta_value = json.loads(bytes(view[head_length:head_length + meta_length])) if meta or arrays else None
    return Entry(head, meta_value, view[aligned(head_length + meta_length):] if arrays else None)


_DIRECTORIES: dict[tuple, tuple[int, dict]] = {}


def _directory(handle, size: int) -> tuple[int, dict]:
    """(where the body starts, fingerprint -> [offset, head, meta, section length]) of an open file."""
    first = handle.read(_FIRST_READ)
    if first[:len(MAGIC)] != MAGIC:
        raise ValueError(f"not a staged model file (no {MAGIC!r})")
    (length, _) = _LENGTHS.unpack_from(first, len(MAGIC))
    text = first[_PREFIX:_PREFIX + length]
    if len(text) < length:
        text += handle.read(length - len(text))
    directory = json.loads(text)
    body = aligned(_PREFIX + length)
    if size != body + directory["body_bytes"]:
        raise ValueError(f"{size} bytes where {body + directory['body_bytes']} were staged (cut short?)")
    return body, directory["models"]
