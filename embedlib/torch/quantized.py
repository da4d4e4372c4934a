"""Row-wise quantised embedding tables in torch, CPU or CUDA (chapter 14, "Smaller tables").

The same names, layout and bytes as :mod:`embedlib.numpy.quantized` (whose docstring describes
FBGEMM's fused row-wise layout), from plain tensor operations, so the same code runs on a GPU.
The layers are ``nn.Module``s holding the fused bytes as a buffer, for inference only: a quantised
table is made after training (post-training quantisation), and its lookups carry no gradient.
"""
from __future__ import annotations

import torch
from torch import nn

from embedlib import _checks
from embedlib.numpy.quantized import (BITS, EPSILON, HALF_MAX, LANES, QuantizedTable, bag_options, check_bits,
                                      check_dim, check_layout, code_bytes, half_error, nonfinite_error,
                                      range_error, row_bytes, table_bytes, table_type, weight_dtype, weight_of)
from embedlib.torch import _tensors
from embedlib.torch import bag as _bag

__all__ = ["QuantizedEmbedding", "QuantizedEmbeddingBag", "QuantizedTable", "dequantize_rows", "quantize_rows",
           "quantized_embedding_bag", "quantized_lookup", "table_bytes"]

_FLOAT_TYPES = {torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------------------------------
# Quantise
# --------------------------------------------------------------------------------------------------
def _signed_zero_pick(x: torch.Tensor, extreme: torch.Tensor) -> torch.Tensor:
    """As the NumPy backend's: the sign of a zero extreme held as both 0.0 and -0.0, as FBGEMM's
    AVX2 search returns it (lanes of 8 columns, a later equal value winning within a lane, the first
    lane holding it across lanes, then the remaining columns, where an earlier value stays)."""
    zero = x == 0
    neg = torch.signbit(x)
    rows = ((extreme == 0) & (zero & neg).any(1) & (zero & ~neg).any(1)).nonzero().squeeze(1)
    if rows.numel() == 0:
        return extreme
    sub, z = x[rows], zero[rows]
    n, d = sub.shape
    main = d // LANES * LANES
    ar = torch.arange(n, device=x.device)
    col = main + z[:, main:].int().argmax(1) if main < d else torch.zeros(n, dtype=torch.long, device=x.device)
    if main:
        blocks = z[:, :main].reshape(n, main // LANES, LANES)
        lane_has = blocks.any(1)
        lane = lane_has.int().argmax(1)
        in_lane = blocks[ar, :, lane]  # (n, blocks): the zeros of that lane
        last = in_lane.shape[1] - 1 - in_lane.flip(1).int().argmax(1)
        col = torch.where(lane_has.any(1), last * LANES + lane, col)
    out = extreme.clone()
    out[rows] = sub[ar, col]
    return out


def _first_bad(mask: torch.Tensor) -> int | None:
    """The first row where ``mask`` holds, or None (one host sync)."""
    bad = mask.nonzero()
    return int(bad[0, 0]) if bad.numel() else None


def _rows_float32(weight) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    _checks.weight_shape(tuple(weight.shape))
    if not weight.dtype.is_floating_point:
        raise TypeError(f"weight must hold floating-point numbers, got dtype {_name(weight.dtype)}")
    weight_dtype(_FLOAT_TYPES.get(weight.dtype, _name(weight.dtype)))
    check_dim(weight.shape[1])
    x = weight.detach().to(torch.float32)
    r = _first_bad(~torch.isfinite(x).all(1))
    if r is not None:
        raise nonfinite_error(r)
    return x


def _div(a, b) -> torch.Tensor:
    """``a / b`` correctly rounded, as NumPy and C compute it, on any device: between two tensors.
    (``2.0 / t`` is ``t.reciprocal() * 2.0`` in torch, and CUDA divides by a Python number as a
    multiplication by its reciprocal: two roundings, which move a code now and then.)"""
    like = b if isinstance(b, torch.Tensor) else a
    a = a if isinstance(a, torch.Tensor) else torch.full_like(like, a)
    b = b if isinstance(b, torch.Tensor) else torch.full_like(like, b)
    return torch.div(a, b)


def _bytes(values: torch.Tensor, dtype) -> torch.Tensor:
    """``(V,)`` values as ``(V, itemsize)`` little-endian bytes (x86 and CUDA are little-endian)."""
    size = torch.finfo(dtype).bits // 8
    return values.to(dtype).clone(memory_format=torch.contiguous_format).view(torch.uint8).reshape(len(values), size)


@torch.no_grad()
def quantize_rows(weight, bits=8) -> QuantizedTable:
    """Quantise each row of ``weight`` (V, D), a float16, float32 or float64 tensor on any device, to
    ``bits`` (8, 4 or 2) per value (chapter 14): a :class:`QuantizedTable` whose ``data`` (a ``uint8``
    tensor on the weight's device) holds FBGEMM's fused row-wise layout, the same bytes as the NumPy
    backend and as ``torch.ops.quantized.embedding_bag_byte_prepack`` / ``embedding_bag_4bit_prepack``
    / ``embedding_bag_2bit_prepack`` (CPU, float32 or float16, D a multiple of 8 // bits for the last two).

    8 bits: ``D`` codes then float32 ``scale = (max - min) / 255`` and ``bias = min`` (``D + 8`` bytes a
    row); each element comes back within ``scale / 2 + 1e-8 * range / (range + 1e-8)`` plus float32
    rounding ``2**-21 * (|x| + |min| + range)``. 4 and 2 bits: codes packed low bits first
    (``ceil(D * bits / 8)`` bytes, a last partial byte padded with zeros), then float16 scale
    ``s = half((max - m) / Q)`` and bias ``m = half(min)`` (``Q = 2**bits - 1``); each element comes
    back within ``max(s / 2, m - min, max - (m + Q*s))`` plus the same float32 rounding; a row whose
    minimum or scale does not fit float16 is refused. See :func:`embedlib.numpy.quantized.quantize_rows`.

    Errors, before anything is computed: ValueError for ``bits`` not in (2, 4, 8), a weight that is
    not 2-D or has no columns, or a row with an infinity or NaN; TypeError for integer weights.
    """
    bits = check_bits(bits)
    x = _rows_float32(weight)
    v, d = x.shape
    lo = _signed_zero_pick(x, x.amin(1)) if v else x.new_zeros(0)
    hi = _signed_zero_pick(x, x.amax(1)) if v else x.new_zeros(0)
    if bits == 8:
        span = hi - lo
        r = _first_bad(~torch.isfinite(span))
        if r is not None:
            raise range_error(r, float(lo[r]), float(hi[r]))
        scale = _div(span, 255.0)
        inverse = _div(255.0, span + float(EPSILON))
        codes = torch.round((x - lo[:, None]) * inverse[:, None]).to(torch.uint8)
        return QuantizedTable(torch.cat([codes, _bytes(scale, torch.float32), _bytes(lo, torch.float32)], 1), 8, d)
    levels = (1 << bits) - 1
    lo_half = lo.to(torch.float16)
    r = _first_bad(torch.isinf(lo_half))
    if r is not None:
        raise half_error(r, bits, "minimum (the bias)", float(lo[r]))
    m = lo_half.to(torch.float32)
    span = hi - m
    scale_half = torch.where(span == 0, 1.0, _div(span, float(levels))).to(torch.float16)
    r = _first_bad(torch.isinf(scale_half))
    if r is not None:
        raise half_error(r, bits, f"scale ((max - min) / {levels})", float(span[r] / levels))
    s = scale_half.to(torch.float32)
    s = torch.where(s == 0, 1.0, s)  # FBGEMM: a scale that rounds to 0 in float16 becomes 1
    inverse = _div(1.0, s)
    codes = torch.round((x - m[:, None]) * inverse[:, None]).clamp(0, levels).to(torch.uint8)
    return QuantizedTable(torch.cat([_pack(codes, bits), _bytes(s, torch.float16), _bytes(lo_half, torch.float16)], 1),
                          bits, d)


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    per_byte = 8 // bits
    v, d = codes.shape
    nb = code_bytes(d, bits)
    padded = codes.new_zeros(v, nb * per_byte)
    padded[:, :d] = codes
    shifts = torch.arange(per_byte, device=codes.device, dtype=torch.uint8) * bits
    # the codes of one byte occupy disjoint bits: their sum is their bitwise or
    return (padded.reshape(v, nb, per_byte) << shifts).sum(2, dtype=torch.int32).to(torch.uint8)


def _unpack(data: torch.Tensor, bits: int, d: int) -> torch.Tensor:
    if bits == 8:
        return data[:, :d]
    per_byte = 8 // bits
    nb = code_bytes(d, bits)
    shifts = torch.arange(per_byte, device=data.device, dtype=torch.uint8) * bits
    codes = (data[:, :nb, None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(len(data), nb * per_byte)[:, :d]


# --------------------------------------------------------------------------------------------------
# Dequantise
# --------------------------------------------------------------------------------------------------
def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once to float32 (a fused multiply-add), as the NumPy backend's: exact
    product in float64, the sum rounded to odd there (TwoSum), then to nearest float32."""
    p = a.to(torch.float64) * b.to(torch.float64)
    q = c.to(torch.float64).expand_as(p)
    s = p + q
    t = s - p
    err = (p - (s - t)) + (q - t)
    fix = (err != 0) & ((s.view(torch.int64) & 1) == 0)
    toward = torch.where(err > 0, torch.inf, -torch.inf).to(torch.float64)
    s = torch.where(fix, torch.nextafter(s, toward), s)
    return s.to(torch.float32)


def _parts(table):
    table_type(table)
    data = table.data
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"the table's data must be a torch.Tensor, got {type(data).__name__}")
    bits, d = check_layout(tuple(data.shape), _name(data.dtype), table.bits, table.embedding_dim)
    return data, bits, d


def _dequantize(data: torch.Tensor, bits: int, d: int) -> torch.Tensor:
    codes = _unpack(data, bits, d)
    nb = code_bytes(d, bits)
    if bits == 8:
        scale = data[:, d:d + 4].clone(memory_format=torch.contiguous_format).view(torch.float32)
        bias = data[:, d + 4:d + 8].clone(memory_format=torch.contiguous_format).view(torch.float32)
        return fma32(codes, scale, bias)
    scale = data[:, nb:nb + 2].clone(memory_format=torch.contiguous_format).view(torch.float16).to(torch.float32)
    bias = data[:, nb + 2:nb + 4].clone(memory_format=torch.contiguous_format).view(torch.float16).to(torch.float32)
    return codes.to(torch.float32) * scale + bias  # the product is exact: one rounding, as an fma


@torch.no_grad()
def dequantize_rows(table, rows=None) -> torch.Tensor:
    """The values of a :class:`QuantizedTable` as float32 (chapter 14): ``code * scale + bias``, each
    rounded once (FBGEMM's fused multiply-add), the whole table ``(V, D)`` or only ``rows`` (1-D
    integer indices, checked as :func:`lookup`'s), ``(len(rows), D)``, on the table's device. The
    round trip is within the bound that :func:`quantize_rows` states."""
    data, bits, d = _parts(table)
    if rows is None:
        return _dequantize(data, bits, d)
    idx = _tensors.indices(rows, data.device, "rows")
    if idx.dim() != 1:
        raise ValueError(f"rows must be 1-D (a list of row indices), got shape {tuple(idx.shape)}")
    _tensors.in_range(idx, len(data))
    return _dequantize(data.index_select(0, idx.long()), bits, d)


@torch.no_grad()
def quantized_lookup(indices, table) -> torch.Tensor:
    """The rows of a :class:`QuantizedTable` that ``indices`` name, dequantised (chapter 14): float32
    ``(*indices.shape, D)``, equal to ``dequantize_rows(table)[indices]``. Only the rows read are
    dequantised (their bytes gathered first): memory grows with the batch, not with the table.
    Indices are checked as :func:`lookup`'s, before any kernel runs (IndexError naming an index
    outside ``[0, num_embeddings)``; TypeError for float or bool indices)."""
    data, bits, d = _parts(table)
    idx = _tensors.indices(indices, data.device)
    _tensors.in_range(idx, len(data))
    rows = data.index_select(0, idx.reshape(-1).long())
    return _dequantize(rows, bits, d).reshape(*idx.shape, d)


@torch.no_grad()
def quantized_embedding_bag(indices, table, offsets=None, *, mode="mean", per_sample_weights=None,
                            padding_idx=None, include_last_offset=False) -> torch.Tensor:
    """Bags of a :class:`QuantizedTable`'s rows (chapter 14): float32 ``(num_bags, D)``, exactly
    ``embedding_bag(indices, dequantize_rows(table), offsets, ...)`` (same checks, same kernels), with
    only the distinct rows the bags read dequantised. For mode "sum", FBGEMM's
    ``embedding_bag_byte_rowwise_offsets`` (and its 4- and 2-bit siblings) gives the same sums with
    other roundings (it adds each row's bias, then its scaled codes, into the running sum)."""
    data, bits, d = _parts(table)
    c = _bag.check(indices, len(data), offsets, mode=mode, per_sample_weights=per_sample_weights,
                   padding_idx=padding_idx, include_last_offset=include_last_offset, device=data.device,
                   dtype=torch.float32)
    flat = c.flat.long()
    if c.pad is not None:  # keep the padding row (read or not): PyTorch's kernels round differently without one
        flat = torch.cat([flat, flat.new_tensor([c.pad])])
    rows, inverse = torch.unique(flat, return_inverse=True)
    pad = None
    if c.pad is not None:
        pad, inverse = int(inverse[-1]), inverse[:-1]
    small = _dequantize(data.index_select(0, rows), bits, d)
    return _bag.run(_bag.CheckedBag(inverse.reshape(-1), c.bounds, c.psw, pad), small, mode)


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
class QuantizedEmbedding(nn.Module):
    """An inference-only embedding layer over a :class:`QuantizedTable` (chapter 14), an ``nn.Module``
    whose fused bytes are the buffer ``data`` (so ``.to(device)`` moves them, and ``state_dict`` holds
    them). ``QuantizedEmbedding.from_float(weight_or_layer, bits=8)`` quantises a 2-D tensor or the
    weight of an :class:`~embedlib.torch.Embedding` (or ``nn.Embedding``); ``forward(indices)`` is
    :func:`quantized_lookup`, without gradients."""

    def __init__(self, table: QuantizedTable):
        super().__init__()
        _, bits, d = _parts(table)
        self.bits, self._dim = bits, d
        self.register_buffer("data", table.data)

    @classmethod
    def from_float(cls, weight_or_layer, bits=8):
        weight, _ = weight_of(weight_or_layer, cls.__name__)
        return cls(quantize_rows(weight, bits))

    @property
    def table(self) -> QuantizedTable:
        return QuantizedTable(self.data, self.bits, self._dim)

    def forward(self, indices) -> torch.Tensor:
        return quantized_lookup(indices, self.table)

    @property
    def num_embeddings(self) -> int:
        return int(self.data.shape[0])

    @property
    def embedding_dim(self) -> int:
        return self._dim

    @property
    def nbytes(self) -> int:
        """Bytes of the fused table (codes, scales and biases): ``table_bytes(V, D, bits)``."""
        return self.data.numel() * self.data.element_size()

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table, ``(V, D)`` float32 on the layer's device, computed on each access."""
        return dequantize_rows(self.table)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}"


class QuantizedEmbeddingBag(QuantizedEmbedding):
    """An inference-only bag layer over a :class:`QuantizedTable` (chapter 14): ``forward(indices,
    offsets=None, per_sample_weights=None)`` is :func:`quantized_embedding_bag` with the layer's
    ``mode``, ``padding_idx`` and ``include_last_offset``; ``from_float(weight_or_layer, bits=8, *,
    mode=None, padding_idx=None, include_last_offset=None)`` takes them from an
    :class:`~embedlib.torch.EmbeddingBag` (or ``nn.EmbeddingBag``) unless given."""

    def __init__(self, table: QuantizedTable, *, mode="mean", padding_idx=None, include_last_offset=False):
        _, _, _ = _parts(table)
        _checks.bag_mode(mode, False)
        pad = _checks.padding_idx(padding_idx, int(table.data.shape[0]))
        super().__init__(table)
        self.mode, self.padding_idx, self.include_last_offset = mode, pad, bool(include_last_offset)

    @classmethod
    def from_float(cls, weight_or_layer, bits=8, *, mode=None, padding_idx=None, include_last_offset=None):
        weight, layer = weight_of(weight_or_layer, cls.__name__)
        return cls(quantize_rows(weight, bits), **bag_options(layer, mode, padding_idx, include_last_offset))

    def forward(self, indices, offsets=None, per_sample_weights=None) -> torch.Tensor:
        return quantized_embedding_bag(indices, self.table, offsets, mode=self.mode,
                                       per_sample_weights=per_sample_weights, padding_idx=self.padding_idx,
                                       include_last_offset=self.include_last_offset)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"
