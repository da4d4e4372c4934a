"""embedlib.datasets.read_safetensors (chapter 11) against files built here byte by byte from the
format's definition (8-byte little-endian header length, JSON header, raw little-endian data), and
every way a file can be wrong: a clear error, raised before any tensor is read, the file untouched."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embedlib.datasets import SafetensorsError, read_safetensors
from embedlib.datasets import safetensors as st_module

#: dtype name -> the NumPy dtype written to disk (little-endian), for every dtype but BF16
PLAIN = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
         "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


def build(tensors: dict, metadata=None, pad: int = 0) -> bytes:
    """A safetensors file from ``{name: (dtype_name, raw_bytes, shape)}``, tensors laid out in order."""
    header, data, offset = {}, b"", 0
    for name, (dtype, raw, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    return from_header(header, data, pad)


def from_header(header, data: bytes, pad: int = 0) -> bytes:
    text = (header if isinstance(header, bytes) else json.dumps(header).encode()) + b" " * pad
    return struct.pack("<Q", len(text)) + text + data


def write(tmp_path, content: bytes, name="t.safetensors"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """The top 16 bits of float32 values (truncation: the values tested are exact in bfloat16)."""
    return (x.astype("<f4").view("<u4") >> 16).astype("<u2")


@given(st.sampled_from(sorted(PLAIN)), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
       st.integers(0, 2**32 - 1))
def test_every_dtype_round_trips(tmp_path_factory, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(PLAIN[dtype])
    if np_dtype.kind == "f":
        values = rng.standard_normal(shape).astype(np_dtype)
    elif np_dtype.kind == "b":
        values = rng.integers(0, 2, shape).astype(bool)
    else:
        info = np.iinfo(np_dtype)
        values = rng.integers(info.min, info.max, shape, dtype=np_dtype, endpoint=True)
    path = write(tmp_path_factory.mktemp("st"), build({"x": (dtype, values.tobytes(), shape),
                                                      "after": ("U8", b"\x07", (1,))}))
    out = read_safetensors(path)
    assert list(out) == ["x", "after"]
    got = out["x"]
    assert got.shape == tuple(shape) and got.dtype == np_dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, values)
    assert got.flags.writeable and got.flags.c_contiguous  # a copy the caller owns
    assert out["after"].tolist() == [7]


def test_bf16_is_widened_to_float32_exactly(tmp_path):
    values = np.array([[1.0, -2.5, 0.0], [3.140625, 1e30, -1e-30]], dtype=np.float32)
    values = (bf16_bits(values).astype(np.uint32) << 16).view(np.float32)  # exact in bfloat16
    path = write(tmp_path, build({"w": ("BF16", bf16_bits(values).tobytes(), values.shape)}))
    got = read_safetensors(path)["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)


def test_names_choose_and_order_the_tensors(tmp_path):
    a, b = np.arange(6, dtype="<f4").reshape(2, 3), np.arange(4, dtype="<i8")
    path = write(tmp_path, build({"a": ("F32", a.tobytes(), a.shape), "b": ("I64", b.tobytes(), b.shape)},
                                 metadata={"format": "pt"}, pad=5))
    assert list(read_safetensors(path, ["b", "a"])) == ["b", "a"]
    only = read_safetensors(str(path), "a")
    assert list(only) == ["a"]
    np.testing.assert_array_equal(only["a"], a)
    with pytest.raises(KeyError, match=r"no tensor named 'c'; it has \['a', 'b'\]"):
        read_safetensors(path, ["a", "c"])
    with pytest.raises(TypeError, match="names must be tensor names"):
        read_safetensors(path, [1])


def test_an_empty_file_of_tensors(tmp_path):
    assert read_safetensors(write(tmp_path, from_header({}, b""))) == {}
    assert read_safetensors(write(tmp_path, from_header({"__metadata__": {"k": "v"}}, b""))) == {}


def _good():
    x = np.arange(4, dtype="<f4")
    return {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, x.tobytes()


def _with(**changes):
    header, data = _good()
    header["x"].update(changes)
    return from_header(header, data)


BAD_FILES = {
    "shorter than 8 bytes": (b"\x10\x00\x00", "truncated: 3 bytes"),
    "header longer than the file": (struct.pack("<Q", 1000) + b"{}", "truncated: the header needs 1000 bytes"),
    "absurd header length": (struct.pack("<Q", 2**40) + b"{}", "bad header: its length says"),
    "header not JSON": (from_header(b"{not json", b""), "not UTF-8 JSON"),
    "header not UTF-8": (from_header(b'{"\xff": 1}', b""), "not UTF-8 JSON"),
    "header a list": (from_header(b"[]", b""), "a JSON list, not an object"),
    "metadata not strings": (from_header({"__metadata__": {"a": 1}}, b""), "__metadata__ must be an object of strings"),
    "entry not an object": (from_header({"x": [1, 2]}, b""), "exactly the keys"),
    "entry missing a key": (from_header({"x": {"dtype": "F32", "shape": [0]}}, b""), "exactly the keys"),
    "entry with an extra key": (_with(extra=1), "exactly the keys"),
    "unknown dtype": (_with(dtype="F8_E4M3"), "unknown dtype 'F8_E4M3'"),
    "shape not a list": (_with(shape=4), "shape must be a list"),
    "negative shape": (_with(shape=[-4]), "shape must be a list of non-negative integers"),
    "bool in shape": (_with(shape=[True, 4]), "shape must be a list of non-negative integers"),
    "offsets reversed": (_with(data_offsets=[16, 0]), "0 <= begin <= end"),
    "three offsets": (_with(data_offsets=[0, 8, 16]), "data_offsets must be"),
    "shape and size disagree": (_with(shape=[2, 3]),
                                r"shape \[2, 3\] of F32 needs 24 bytes but data_offsets \[0, 16\] hold 16"),
    "data truncated": (None, "truncated: the tensors need 16 bytes of data but only 12"),
    "overlap": (None, "overlaps"),
    "gap": (None, "a gap of 4 bytes before tensor 'y'"),
    "bytes left over": (from_header(_good()[0], _good()[1] + b"xx"), "2 bytes after the last tensor"),
}


def _special(case):
    header, data = _good()
    if case == "data truncated":
        return from_header(header, data[:12])
    y = {"dtype": "F32", "shape": [1]}
    if case == "overlap":
        return from_header(dict(header, y=dict(y, data_offsets=[12, 16])), data)
    if case == "gap":
        return from_header(dict(header, y=dict(y, data_offsets=[20, 24])), data + b"\x00" * 8)
    raise AssertionError(case)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_get_a_clear_error_and_stay_unchanged(tmp_path, case):
    content, message = BAD_FILES[case]
    content = _special(case) if content is None else content
    path = write(tmp_path, content)
    with pytest.raises(SafetensorsError, match=message) as info:
        read_safetensors(path)
    assert isinstance(info.value, ValueError) and str(path) in str(info.value)
    assert path.read_bytes() == content


def test_all_checks_run_before_reading_any_tensor(tmp_path, monkeypatch):
    """A bad entry anywhere stops the read before the good tensors are read."""
    header, data = _good()
    header["z"] = {"dtype": "XX", "shape": [0], "data_offsets": [16, 16]}
    path = write(tmp_path, from_header(header, data))
    reads = []
    original = np.frombuffer
    monkeypatch.setattr(st_module.np, "frombuffer", lambda *a, **k: reads.append(a) or original(*a, **k))
    with pytest.raises(SafetensorsError, match="unknown dtype"):
        read_safetensors(path, ["x"])
    assert reads == []


def test_agrees_with_the_safetensors_package_when_installed(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, -2], dtype=np.int16)}
    safetensors_numpy.save_file(tensors, tmp_path / "s.safetensors")
    got = read_safetensors(tmp_path / "s.safetensors")
    for name, value in tensors.items():
        np.testing.assert_array_equal(got[name], value)
