"""Row-wise quantised embedding tables: 8, 4 or 2 bits per value (chapter 14, "Smaller tables").

Each row keeps its own scale and bias (its minimum), fused after its codes in one ``uint8`` row:
FBGEMM's layout, which ``torch.ops.quantized.embedding_bag_byte_prepack`` and
``embedding_bag_4bit_prepack`` / ``embedding_bag_2bit_prepack`` produce and TorchRec's inference
tables read.

* 8 bits: ``D`` codes, then the scale and the bias as float32 (little-endian): ``D + 8`` bytes a row.
* 4 and 2 bits: ``ceil(D * bits / 8)`` bytes of codes, element ``j`` in bits
  ``(j % per_byte) * bits`` of byte ``j // per_byte`` (the low bits first; ``per_byte = 8 // bits``),
  then the scale and the bias as float16: ``ceil(D * bits / 8) + 4`` bytes a row. When ``D`` is not
  a multiple of ``per_byte`` the last byte's unused high bits are zero (FBGEMM pads so; PyTorch's
  prepack refuses such a ``D``).

A value is ``code * scale + bias``. :func:`quantize_rows` computes the bytes exactly as PyTorch's
prepack operators do on x86 (FBGEMM's AVX2 kernels), :func:`dequantize_rows` the values exactly as
FBGEMM's lookups do (one rounding: a fused multiply-add). :func:`quantized_lookup` and
:func:`quantized_embedding_bag` dequantise only the rows they read, so their memory grows with the
batch, never with the table.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from embedlib import _checks
from embedlib.numpy import _arrays
from embedlib.numpy import bag as _bag

__all__ = ["QuantizedEmbedding", "QuantizedEmbeddingBag", "QuantizedTable", "dequantize_rows", "quantize_rows",
           "quantized_embedding_bag", "quantized_lookup", "table_bytes"]

#: The code widths of FBGEMM's row-wise formats.
BITS = (2, 4, 8)
#: FBGEMM's ``kEpsilon``: the 8-bit codes are ``(x - min) * 255 / (range + EPSILON)``.
EPSILON = np.float32(1e-8)
#: The largest finite float16, for the 4- and 2-bit formats' scale and bias.
HALF_MAX = 65504.0
#: FBGEMM's AVX2 kernels find a row's minimum and maximum in this many lanes (it decides which of
#: 0.0 and -0.0 is a row's minimum or maximum when the row holds both).
LANES = 8


class QuantizedTable(NamedTuple):
    """A row-wise quantised table (chapter 14): ``data`` (``uint8``, ``(V, row_bytes)``) in FBGEMM's
    fused layout, the code width ``bits`` (8, 4 or 2) and the number of columns ``embedding_dim``
    (which 4- and 2-bit rows cannot tell when ``D`` is not a multiple of ``8 // bits``)."""

    data: Any
    bits: int
    embedding_dim: int

    @property
    def num_embeddings(self) -> int:
        return int(self.data.shape[0])


# --------------------------------------------------------------------------------------------------
# Sizes and checks: plain Python, shared with the torch backend
# --------------------------------------------------------------------------------------------------
def check_bits(bits, allowed=BITS) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in allowed:
        raise ValueError(f"bits must be one of {allowed}, got {bits!r}")
    return int(bits)


def code_bytes(embedding_dim: int, bits: int) -> int:
    """Bytes of codes in one row: ``ceil(D * bits / 8)``."""
    per_byte = 8 // bits
    return -(-embedding_dim // per_byte)


def row_bytes(embedding_dim: int, bits: int) -> int:
    """Bytes of one fused row: the codes, then a float32 (8 bits) or float16 (4, 2 bits) scale and bias."""
    return code_bytes(embedding_dim, bits) + (8 if bits == 8 else 4)


def table_bytes(num_embeddings, embedding_dim, bits) -> int:
    """Bytes of a ``(num_embeddings, embedding_dim)`` table stored with ``bits`` per value (chapter 14).

    ``bits`` 32 or 16: a plain float32 or float16 table, ``V * D * 4`` or ``V * D * 2``. ``bits`` 8, 4
    or 2: the fused row-wise table of :func:`quantize_rows`, ``V * (D + 8)`` for 8 bits and
    ``V * (ceil(D * bits / 8) + 4)`` for 4 and 2 (each row's scale and bias included).
    """
    v = _checks.count(num_embeddings, "num_embeddings")
    d = _checks.count(embedding_dim, "embedding_dim")
    bits = check_bits(bits, (2, 4, 8, 16, 32))
    if bits >= 16:
        return v * d * (bits // 8)
    return v * row_bytes(d, bits)


def check_dim(embedding_dim: int) -> None:
    if embedding_dim == 0:
        raise ValueError("weight must have at least one column: a row without values has no minimum and no scale "
                         "to quantise it with")


def check_layout(shape: tuple, dtype_name: str, bits, embedding_dim) -> tuple[int, int]:
    """A table's ``data`` must be ``uint8`` of shape ``(V, row_bytes(D, bits))``; returns ``(bits, D)``."""
    bits = check_bits(bits)
    d = _checks.positive(embedding_dim, "embedding_dim")
    if dtype_name != "uint8":
        raise TypeError(f"the table's data must be uint8 bytes, got dtype {dtype_name}")
    expected = row_bytes(d, bits)
    if len(shape) != 2 or shape[1] != expected:
        raise ValueError(f"the table's data must have shape (num_embeddings, {expected}) for embedding_dim={d} "
                         f"at {bits} bits, got {tuple(shape)}")
    return bits, d


def table_type(table) -> None:
    if not isinstance(table, QuantizedTable):
        raise TypeError(f"table must be a QuantizedTable (from quantize_rows), got {type(table).__name__}")


def nonfinite_error(row: int) -> ValueError:
    return ValueError(f"weight row {row} holds an infinity or NaN (after conversion to float32): "
                      "a row-wise quantised table stores finite values only")


def range_error(row: int, lo: float, hi: float) -> ValueError:
    return ValueError(f"weight row {row} spans [{lo!r}, {hi!r}], a range too wide for float32: its scale "
                      "would be infinite")


def half_error(row: int, bits: int, what: str, value: float) -> ValueError:
    return ValueError(f"weight row {row}: the {bits}-bit format stores each row's {what} as float16, which holds "
                      f"at most {HALF_MAX:g} in magnitude, and this row's {what} is {value!r}; "
                      "use bits=8 (float32 scale and bias) or rescale the table")


def weight_dtype(dtype_name: str, allowed=("float16", "float32", "float64")) -> None:
    if dtype_name not in allowed:
        raise TypeError(f"weight must hold float16, float32 or float64 numbers, got dtype {dtype_name}")


# --------------------------------------------------------------------------------------------------
# Quantise
# --------------------------------------------------------------------------------------------------
def _signed_zero_pick(x: np.ndarray, extreme: np.ndarray) -> np.ndarray:
    """The row extremes with the sign of zero that FBGEMM's AVX2 search returns (the values are equal).

    It keeps the extreme of columns ``c, c + 8, ...`` in lane ``c % 8`` of its main part (the first
    ``D // 8 * 8`` columns), a later equal value replacing an earlier one; then takes the first lane
    holding the extreme, and only then looks at the remaining columns, where an earlier value stays.
    Only a zero extreme held as both 0.0 and -0.0 can come out differently, so only such rows are redone.
    """
    zero = x == 0
    rows = np.flatnonzero((extreme == 0) & (zero & np.signbit(x)).any(1) & (zero & ~np.signbit(x)).any(1))
    if rows.size == 0:
        return extreme
    sub, z = x[rows], zero[rows]
    n, d = sub.shape
    main = d // LANES * LANES
    col = main + z[:, main:].argmax(1) if main < d else np.zeros(n, np.int64)  # the first zero after the main part
    if main:
        blocks = z[:, :main].reshape(n, main // LANES, LANES)
        lane_has = blocks.any(1)
        lane = lane_has.argmax(1)
        in_lane = blocks[np.arange(n), :, lane]  # (n, blocks): the zeros of that lane
        last = in_lane.shape[1] - 1 - in_lane[:, ::-1].argmax(1)
        col = np.where(lane_has.any(1), last * LANES + lane, col)
    out = extreme.copy()
    out[rows] = sub[np.arange(n), col]
    return out


def _rows_float32(weight):
    """The weight as a float32 (V, D) array, checked: the values FBGEMM reads."""
    w = np.asarray(weight)
    _checks.weight_shape(w.shape)
    if w.dtype.kind in "biuc" or not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"weight must hold floating-point numbers, got dtype {w.dtype}")
    weight_dtype(str(w.dtype))
    check_dim(w.shape[1])
    with np.errstate(over="ignore"):
        x = w.astype(np.float32)
    finite = np.isfinite(x).all(1)
    if not finite.all():
        raise nonfinite_error(int(np.flatnonzero(~finite)[0]))
    return x


def quantize_rows(weight, bits=8) -> QuantizedTable:
    """Quantise each row of ``weight`` (V, D) to ``bits`` (8, 4 or 2) per value (chapter 14).

    Returns a :class:`QuantizedTable` whose ``data`` is FBGEMM's fused row-wise layout (see the module
    docstring), byte for byte what ``torch.ops.quantized.embedding_bag_byte_prepack`` (8 bits),
    ``embedding_bag_4bit_prepack`` and ``embedding_bag_2bit_prepack`` return for the same float32 or
    float16 weight on x86 (the 4- and 2-bit ones for D a multiple of 8 // bits, the only D they take).
    float64 weights are rounded to float32 first (as FBGEMM computes in float32).

    8 bits: ``scale = (max - min) / 255`` and ``bias = min`` in float32, and the codes
    ``round((x - min) * (255 / (max - min + 1e-8)))`` (FBGEMM's epsilon), rounded half to even. Then
    each element comes back within ``scale / 2 + 1e-8 * range / (range + 1e-8)`` (``range = max - min``,
    the second term FBGEMM's epsilon), plus float32 rounding: ``2**-21 * (|x| + |min| + range)``
    (and ``2**-140`` where the differences are subnormal floats).

    4 and 2 bits (``Q = 2**bits - 1``): the bias is the minimum rounded to float16, ``m = half(min)``;
    the scale ``s = half((max - m) / Q)`` (1 if that is 0, a constant row included); the codes
    ``clip(round((x - m) / s), 0, Q)``. So each element comes back as the nearest point of the grid
    ``m, m + s, ..., m + Q*s``: within ``max(s / 2, m - min, max - (m + Q*s))`` (the last two are the
    float16 roundings of the minimum and the scale, when they push the grid off the row's values), plus
    the same float32 rounding. A row whose minimum or scale does not fit float16 (65504) is refused.

    Errors: ``bits`` not 8, 4 or 2, a weight that is not 2-D or has no columns, or a row with an
    infinity or NaN: ValueError; integer (or bool) weights: TypeError. Nothing is computed before.
    """
    bits = check_bits(bits)
    x = _rows_float32(weight)
    v, d = x.shape
    lo = _signed_zero_pick(x, x.min(1)) if v else np.zeros(0, np.float32)
    hi = _signed_zero_pick(x, x.max(1)) if v else np.zeros(0, np.float32)
    if bits == 8:
        with np.errstate(over="ignore"):
            span = hi - lo
        bad = ~np.isfinite(span)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise range_error(r, float(lo[r]), float(hi[r]))
        scale = span / np.float32(255)
        inverse = np.float32(255) / (span + EPSILON)
        codes = np.rint((x - lo[:, None]) * inverse[:, None])
        out = np.empty((v, d + 8), np.uint8)
        out[:, :d] = codes
        out[:, d:d + 4] = scale.astype("<f4").view(np.uint8).reshape(v, 4)
        out[:, d + 4:] = lo.astype("<f4").view(np.uint8).reshape(v, 4)
        return QuantizedTable(out, 8, d)
    levels = (1 << bits) - 1
    with np.errstate(over="ignore"):
        lo_half = lo.astype(np.float16)
    bad = np.isinf(lo_half)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise half_error(r, bits, "minimum (the bias)", float(lo[r]))
    m = lo_half.astype(np.float32)
    span = hi - m
    with np.errstate(over="ignore"):
        scale_half = np.where(span == 0, np.float32(1), span / np.float32(levels)).astype(np.float16)
    bad = np.isinf(scale_half)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise half_error(r, bits, "scale ((max - min) / {})".format(levels), float(span[r] / levels))
    s = scale_half.astype(np.float32)
    s[s == 0] = 1  # FBGEMM: a scale that rounds to 0 in float16 becomes 1 (1 / s must be finite)
    inverse = np.float32(1) / s
    codes = np.clip(np.rint((x - m[:, None]) * inverse[:, None]), 0, levels).astype(np.uint8)
    out = np.empty((v, row_bytes(d, bits)), np.uint8)
    nb = code_bytes(d, bits)
    out[:, :nb] = pack_codes(codes, bits)
    out[:, nb:nb + 2] = s.astype("<f2").view(np.uint8).reshape(v, 2)
    out[:, nb + 2:] = lo_half.astype("<f2").view(np.uint8).reshape(v, 2)
    return QuantizedTable(out, bits, d)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """``(V, D)`` codes below ``2**bits`` into ``(V, ceil(D * bits / 8))`` bytes, low bits first, zero-padded."""
    per_byte = 8 // bits
    v, d = codes.shape
    nb = code_bytes(d, bits)
    padded = np.zeros((v, nb * per_byte), np.uint8)
    padded[:, :d] = codes
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    return np.bitwise_or.reduce(padded.reshape(v, nb, per_byte) << shifts, axis=2).astype(np.uint8)


def unpack_codes(data: np.ndarray, bits: int, embedding_dim: int) -> np.ndarray:
    """The ``(n, D)`` codes of fused rows ``data`` (``uint8``, ``(n, row_bytes)``)."""
    if bits == 8:
        return data[:, :embedding_dim]
    per_byte = 8 // bits
    nb = code_bytes(embedding_dim, bits)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    codes = (data[:, :nb, None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(len(data), nb * per_byte)[:, :embedding_dim]


# --------------------------------------------------------------------------------------------------
# Dequantise
# --------------------------------------------------------------------------------------------------
def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32 (a fused multiply-add), for float32 ``b`` and ``c`` and
    ``a`` holding integers below ``2**29``: ``a * b`` is exact in float64, the sum is rounded to odd
    in float64 (TwoSum gives its error) and then to nearest float32, which is then the correctly
    rounded result (53 >= 24 + 2 bits)."""
    p = a.astype(np.float64) * b.astype(np.float64)
    q = np.broadcast_to(c.astype(np.float64), p.shape)
    s = p + q
    t = s - p
    err = (p - (s - t)) + (q - t)
    even = (s.view(np.int64) & 1) == 0
    fix = (err != 0) & even
    if fix.any():
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


def _parts(table):
    table_type(table)
    data = table.data
    if not isinstance(data, np.ndarray):
        raise TypeError(f"the table's data must be a NumPy array, got {type(data).__name__}")
    bits, d = check_layout(data.shape, str(data.dtype), table.bits, table.embedding_dim)
    return data, bits, d


def _dequantize(data: np.ndarray, bits: int, d: int) -> np.ndarray:
    """Fused rows (n, row_bytes) to float32 (n, D), without checks."""
    n = len(data)
    codes = unpack_codes(data, bits, d)
    nb = code_bytes(d, bits)
    if bits == 8:
        scale = np.ascontiguousarray(data[:, d:d + 4]).view("<f4").reshape(n, 1)
        bias = np.ascontiguousarray(data[:, d + 4:d + 8]).view("<f4").reshape(n, 1)
        return fma32(codes, scale, bias)
    scale = np.ascontiguousarray(data[:, nb:nb + 2]).view("<f2").reshape(n, 1).astype(np.float32)
    bias = np.ascontiguousarray(data[:, nb + 2:nb + 4]).view("<f2").reshape(n, 1).astype(np.float32)
    # code * scale is exact in float32 (4 + 11 bits), so the one rounding is the addition's: as an fma
    return codes.astype(np.float32) * scale + bias


def dequantize_rows(table, rows=None) -> np.ndarray:
    """The values of a :class:`QuantizedTable` as float32 (chapter 14): ``code * scale + bias``.

    The whole table ``(V, D)``, or only ``rows`` (1-D integer indices, checked as :func:`lookup`'s),
    shape ``(len(rows), D)``. Each value is rounded once, as FBGEMM's fused multiply-add computes it
    in ``embedding_bag_byte_rowwise_offsets`` and its 4- and 2-bit siblings (for 4 and 2 bits the
    product is exact, so a plain multiply and add gives the same). The round trip
    ``dequantize_rows(quantize_rows(x, bits))`` is within the bound that :func:`quantize_rows` states.
    """
    data, bits, d = _parts(table)
    if rows is None:
        return _dequantize(data, bits, d)
    idx = _arrays.indices(rows, "rows")
    if idx.ndim != 1:
        raise ValueError(f"rows must be 1-D (a list of row indices), got shape {idx.shape}")
    _arrays.in_range(idx, len(data))
    return _dequantize(data[idx], bits, d)


def quantized_lookup(indices, table) -> np.ndarray:
    """The rows of a :class:`QuantizedTable` that ``indices`` name, dequantised (chapter 14):
    float32 ``(*indices.shape, D)``, equal to ``dequantize_rows(table)[indices]``.

    Only the rows read are dequantised (their bytes gathered first), so memory grows with the batch,
    not with the table. Indices are checked as :func:`lookup`'s: IndexError naming an index outside
    ``[0, num_embeddings)``, TypeError for float or bool indices.
    """
    data, bits, d = _parts(table)
    idx = _arrays.indices(indices)
    _arrays.in_range(idx, len(data))
    return _dequantize(data[idx.reshape(-1)], bits, d).reshape(idx.shape + (d,))


def quantized_embedding_bag(indices, table, offsets=None, *, mode="mean", per_sample_weights=None,
                            padding_idx=None, include_last_offset=False) -> np.ndarray:
    """Bags of a :class:`QuantizedTable`'s rows (chapter 14): float32 ``(num_bags, D)``.

    Exactly ``embedding_bag(indices, dequantize_rows(table), offsets, ...)`` (same arguments, same
    checks, same bits), dequantising only the distinct rows the bags read. For mode "sum",
    FBGEMM's ``embedding_bag_byte_rowwise_offsets`` (and its 4- and 2-bit siblings) computes the same
    sums with other roundings: it adds each row's bias and scaled codes into the running sum.
    """
    data, bits, d = _parts(table)
    p = _bag.plan(indices, len(data), offsets, mode=mode, per_sample_weights=per_sample_weights,
                  padding_idx=padding_idx, include_last_offset=include_last_offset, dtype=np.float32)
    rows, inverse = np.unique(p.rows, return_inverse=True)
    small = _dequantize(data[rows], bits, d)
    return _bag.forward(p._replace(rows=inverse.reshape(-1).astype(np.int64)), small)[0]


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
def weight_of(weight_or_layer, what: str):
    """``(weight, layer or None)``: a layer's weight, refused if it rescales rows as it reads them."""
    if hasattr(weight_or_layer, "weight") and hasattr(weight_or_layer, "embedding_dim"):
        layer = weight_or_layer
        if getattr(layer, "max_norm", None) is not None:
            raise ValueError(f"{what}.from_float: the layer has max_norm={layer.max_norm}, which rescales rows as "
                             "they are read; a quantised table stores fixed rows (renorm the rows first, then "
                             "quantise a layer without max_norm)")
        return layer.weight, layer
    return weight_or_layer, None


class QuantizedEmbedding:
    """An inference-only embedding layer over a :class:`QuantizedTable` (chapter 14).

    ``QuantizedEmbedding.from_float(weight_or_layer, bits=8)`` quantises a 2-D array or an
    :class:`~embedlib.numpy.Embedding`'s weight; ``forward(indices)`` (or calling the layer) is
    :func:`quantized_lookup`.
    """

    def __init__(self, table: QuantizedTable):
        _parts(table)
        self.table = table

    @classmethod
    def from_float(cls, weight_or_layer, bits=8):
        weight, _ = weight_of(weight_or_layer, cls.__name__)
        return cls(quantize_rows(weight, bits))

    def forward(self, indices):
        return quantized_lookup(indices, self.table)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    @property
    def data(self):
        return self.table.data

    @property
    def num_embeddings(self) -> int:
        return int(self.table.data.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.table.embedding_dim)

    @property
    def bits(self) -> int:
        return int(self.table.bits)

    @property
    def nbytes(self) -> int:
        """Bytes of the fused table (codes, scales and biases): ``table_bytes(V, D, bits)``."""
        return int(self.table.data.nbytes)

    @property
    def weight(self):
        """The dequantised table, ``(V, D)`` float32, computed (materialised) on each access."""
        return dequantize_rows(self.table)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_embeddings}, {self.embedding_dim}, bits={self.bits})"


class QuantizedEmbeddingBag(QuantizedEmbedding):
    """An inference-only bag layer over a :class:`QuantizedTable` (chapter 14): ``forward(indices,
    offsets=None, per_sample_weights=None)`` is :func:`quantized_embedding_bag` with the layer's
    ``mode``, ``padding_idx`` and ``include_last_offset``.

    ``from_float(weight_or_layer, bits=8, *, mode=None, padding_idx=None, include_last_offset=None)``
    takes them from an :class:`~embedlib.numpy.EmbeddingBag` layer unless given (else "mean", None, False).
    """

    def __init__(self, table: QuantizedTable, *, mode="mean", padding_idx=None, include_last_offset=False):
        _parts(table)
        _checks.bag_mode(mode, False)
        self.padding_idx = _checks.padding_idx(padding_idx, int(table.data.shape[0]))
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        self.table = table

    @classmethod
    def from_float(cls, weight_or_layer, bits=8, *, mode=None, padding_idx=None, include_last_offset=None):
        weight, layer = weight_of(weight_or_layer, cls.__name__)
        options = bag_options(layer, mode, padding_idx, include_last_offset)
        return cls(quantize_rows(weight, bits), **options)

    def forward(self, indices, offsets=None, per_sample_weights=None):
        return quantized_embedding_bag(indices, self.table, offsets, mode=self.mode,
                                       per_sample_weights=per_sample_weights, padding_idx=self.padding_idx,
                                       include_last_offset=self.include_last_offset)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, "
                f"mode={self.mode!r})")


def bag_options(layer, mode, padding_idx, include_last_offset) -> dict:
    """A bag layer's options: those given, else the float layer's (if it is a bag layer), else the defaults."""
    def pick(given, name, default):
        if given is not None:
            return given
        return getattr(layer, name) if hasattr(layer, "mode") else default  # only a bag layer's options
    return dict(mode=pick(mode, "mode", "mean"), padding_idx=pick(padding_idx, "padding_idx", None),
                include_last_offset=pick(include_last_offset, "include_last_offset", False))
