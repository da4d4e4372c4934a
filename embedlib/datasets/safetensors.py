"""Reading the safetensors format with NumPy alone (chapter 11 opens a pretrained model's token table).

A ``.safetensors`` file is three parts, nothing else:

1. 8 bytes: ``N``, the length of the header, an unsigned little-endian 64-bit integer;
2. ``N`` bytes: a JSON object (UTF-8, possibly padded with trailing spaces) mapping each tensor's name
   to ``{"dtype": "F32", "shape": [30522, 384], "data_offsets": [begin, end]}``, plus an optional
   ``"__metadata__"`` object of strings;
3. the data: every tensor's raw little-endian bytes in row-major order, tensor ``t`` at
   ``data[begin:end]`` (offsets counted from the start of this part). The tensors cover the data
   exactly once: no overlaps, no gaps.

:func:`read_safetensors` checks the whole header against the file's size before it reads any tensor,
then reads only the tensors asked for. The ``safetensors`` package is not needed.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable

import numpy as np

#: The format's dtype names and the little-endian NumPy dtype of their bytes (BF16 is read as its
#: 16 raw bits and widened to float32: NumPy has no bfloat16).
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

#: The reference implementation refuses headers above 100 MB; so do we (a corrupt length would
#: otherwise make us read the whole file as JSON).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsError(ValueError):
    """A file that is not valid safetensors: the message says what is wrong and where."""


def read_safetensors(path, names: Iterable[str] | str | None = None) -> dict[str, np.ndarray]:
    """The tensors of the safetensors file at ``path`` as NumPy arrays, ``{name: array}`` (chapter 11).

    ``names``: the tensors to read (one name or a list; all of them, in the file's order, when
    None). Each array is a fresh copy in native byte order with the stored shape and dtype, except
    ``BF16``, returned as float32 (exactly: bfloat16 is float32 with the low 16 bits cut off).
    Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL.

    Everything is checked before any tensor is read: a file shorter than its header says
    (truncated), a header that is not a JSON object of well-formed entries, an unknown dtype, a
    shape whose size does not match its byte range, byte ranges that overlap, leave gaps or run past
    the end of the file: :class:`SafetensorsError` (a ``ValueError``) naming the problem. A name
    that is not in the file: ``KeyError`` listing the names that are.
    """
    path = os.fspath(path)
    if isinstance(names, str):
        names = [names]
    elif names is not None:
        names = list(names)
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(f"names must be tensor names (strings), got {bad[0]!r}")
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        header, data_start = _read_header(f, file_size, path)
        wanted = list(header) if names is None else names
        missing = [n for n in wanted if n not in header]
        if missing:
            raise KeyError(f"{path} has no tensor named {missing[0]!r}; it has {sorted(header)}")
        out = {}
        for name in wanted:
            dtype_name, shape, (begin, end) = header[name]
            f.seek(data_start + begin)
            raw = f.read(end - begin)
            if len(raw) != end - begin:  # the file shrank while we read it
                raise SafetensorsError(f"{path}: truncated while reading tensor {name!r}")
            arr = np.frombuffer(raw, dtype=DTYPES[dtype_name]).reshape(shape)
            if dtype_name == "BF16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            out[name] = arr.astype(arr.dtype.newbyteorder("="), copy=True)
    return out


Entry = tuple[str, tuple[int, ...], tuple[int, int]]  # (dtype, shape, (begin, end))


def _read_header(f, file_size: int, path: str) -> tuple[dict[str, Entry], int]:
    """Parse and check the header: ``({name: (dtype, shape, (begin, end))}, start of the data)``."""
    if file_size < 8:
        raise SafetensorsError(f"{path}: truncated: {file_size} bytes, fewer than the 8 of the header length")
    n = int.from_bytes(f.read(8), "little")
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"{path}: bad header: its length says {n} bytes, more than the "
                               f"{MAX_HEADER_BYTES} allowed (not a safetensors file?)")
    if 8 + n > file_size:
        raise SafetensorsError(f"{path}: truncated: the header needs {n} bytes but only {file_size - 8} follow")
    try:
        raw = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: bad header: not UTF-8 JSON ({e})") from None
    if not isinstance(raw, dict):
        raise SafetensorsError(f"{path}: bad header: a JSON {type(raw).__name__}, not an object")
    metadata = raw.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise SafetensorsError(f"{path}: bad header: __metadata__ must be an object of strings")
    data_size = file_size - 8 - n
    header = {name: _entry(name, entry, path) for name, entry in raw.items()}
    # The byte ranges, in order, must tile the data exactly (as the reference implementation checks).
    expected = 0
    for name, (_, _, (begin, end)) in sorted(header.items(), key=lambda kv: kv[1][2]):
        if begin < expected:
            raise SafetensorsError(f"{path}: bad offsets: tensor {name!r} at [{begin}, {end}) overlaps the "
                                   f"tensor before it, which ends at {expected}")
        if begin > expected:
            raise SafetensorsError(f"{path}: bad offsets: a gap of {begin - expected} bytes before tensor {name!r}")
        expected = end
    if expected > data_size:
        raise SafetensorsError(f"{path}: truncated: the tensors need {expected} bytes of data but only "
                               f"{data_size} follow the header")
    if expected < data_size:
        raise SafetensorsError(f"{path}: bad offsets: {data_size - expected} bytes after the last tensor "
                               "belong to none")
    return header, 8 + n


def _entry(name: str, entry, path: str) -> Entry:
    """One header entry, checked: dtype known, shape of non-negative ints, offsets matching the size."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{where}: bad header: an entry must be an object with exactly the keys "
                               f"dtype, shape and data_offsets, got {entry!r}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        raise SafetensorsError(f"{where}: unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape)):
        raise SafetensorsError(f"{where}: bad header: shape must be a list of non-negative integers, got {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where}: bad header: data_offsets must be [begin, end] with "
                               f"0 <= begin <= end, got {offsets!r}")
    size = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != size:
        raise SafetensorsError(f"{where}: shape {shape} of {dtype} needs {size} bytes but data_offsets "
                               f"{offsets} hold {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
