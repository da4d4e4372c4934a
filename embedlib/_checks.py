"""Argument checks and error messages shared by both backends.

Every function here works on plain Python values (ints, shapes, dtype names), so the NumPy and the
torch backend raise exactly the same errors with exactly the same words. Each backend extracts those
values from its own arrays and calls in here *before* computing or changing anything.
"""
from __future__ import annotations

import operator

#: One-hot arrays larger than this many bytes are refused (2 GiB). Pass ``max_bytes=`` to change it.
DEFAULT_MAX_BYTES = 2 * 1024**3

BAG_MODES = ("sum", "mean", "max")


def count(value, name: str) -> int:
    """A non-negative Python int (``num_embeddings``, ``num_buckets``...), else TypeError/ValueError."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}") from None
    if n < 0:
        raise ValueError(f"{name} must be non-negative, got {n}")
    return n


def positive(value, name: str) -> int:
    n = count(value, name)
    if n == 0:
        raise ValueError(f"{name} must be positive, got 0")
    return n


def index_dtype(kind: str, dtype_name: str, what: str = "indices") -> None:
    """``kind`` is 'int', 'bool' or 'other' (the backend decides); only integers are indices."""
    if kind == "bool":
        raise TypeError(
            f"{what} must be integers, got booleans (dtype {dtype_name}); "
            "to select rows with a mask, convert it with nonzero() first"
        )
    if kind != "int":
        raise TypeError(f"{what} must be integers, got dtype {dtype_name}")


def index_range(lowest: int, highest: int, num_embeddings: int, what: str = "index") -> None:
    """Every index must lie in ``[0, num_embeddings)``; name the first bad value found."""
    if lowest < 0:
        raise out_of_range(lowest, num_embeddings, what)
    if highest >= num_embeddings:
        raise out_of_range(highest, num_embeddings, what)


def out_of_range(value: int, num_embeddings: int, what: str = "index") -> IndexError:
    """The error for one index outside ``[0, num_embeddings)`` (raised by the caller)."""
    if value < 0:
        return IndexError(
            f"{what} {value} is out of range for num_embeddings={num_embeddings}: negative indices are "
            f"not allowed (NumPy would silently wrap {value} to row {num_embeddings + value}); "
            f"valid indices are 0..{num_embeddings - 1}"
        )
    valid = f"0..{num_embeddings - 1}" if num_embeddings else "none (the table is empty)"
    return IndexError(f"{what} {value} is out of range for num_embeddings={num_embeddings}; valid indices are {valid}")


def weight_shape(shape: tuple) -> None:
    if len(shape) != 2:
        raise ValueError(
            f"weight must be 2-D (num_embeddings, embedding_dim), got {len(shape)}-D with shape {tuple(shape)}"
        )


def onehot_size(index_shape: tuple, num_embeddings: int, itemsize: int, dtype_name: str, max_bytes) -> None:
    """Refuse, before allocating, a one-hot array that would exceed ``max_bytes``."""
    rows = 1
    for s in index_shape:
        rows *= int(s)
    need = rows * num_embeddings * itemsize
    if max_bytes is not None and need > max_bytes:
        raise ValueError(
            f"the one-hot array would need {format_bytes(need)} for {rows:,} x {num_embeddings:,} {dtype_name} "
            f"entries, more than max_bytes={format_bytes(max_bytes)}; use lookup(indices, weight), which "
            f"reads the same rows without building the one-hot array (or raise max_bytes)"
        )


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.2f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def same_shape(got: tuple, expected: tuple, name: str, because: str) -> None:
    if tuple(got) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)} ({because}), got {tuple(got)}")


def same_dtype(got: str, weight_dtype: str, name: str) -> None:
    """``name`` must have the weight's float type, as torch requires (no silent cast either way)."""
    if got != weight_dtype:
        raise TypeError(
            f"{name} must have the weight's dtype {weight_dtype}, got {got}; convert one of them "
            f"(e.g. {name}.to(weight.dtype) or .astype(weight.dtype))"
        )


def padding_idx(padding_idx, num_embeddings: int):
    """Normalise ``padding_idx`` as torch does: ``None``, or an int in ``[-V, V)`` mapped to ``[0, V)``."""
    if padding_idx is None:
        return None
    p = count(abs(padding_idx), "padding_idx") * (1 if padding_idx >= 0 else -1)
    if not -num_embeddings <= p < num_embeddings:
        raise ValueError(
            f"padding_idx must be in [-{num_embeddings}, {num_embeddings}) for num_embeddings={num_embeddings}, "
            f"got {padding_idx}"
        )
    return p % num_embeddings


def max_norm(value, norm_type):
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"max_norm must be a positive number or None, got {value!r}")
    if not isinstance(norm_type, (int, float)) or isinstance(norm_type, bool) or not norm_type > 0:
        raise ValueError(f"norm_type must be a positive number, got {norm_type!r}")
    return float(value)


def bag_mode(mode: str, has_weights: bool) -> None:
    if mode not in BAG_MODES:
        raise ValueError(f"mode must be one of {BAG_MODES}, got {mode!r}")
    if has_weights and mode != "sum":
        raise ValueError(
            f"per_sample_weights is only supported with mode='sum', got mode={mode!r} "
            "(a weighted mean is a weighted sum with weights that add up to 1 in each bag)"
        )


def bag_scale_grad_by_freq(mode: str, scale_grad_by_freq) -> None:
    if scale_grad_by_freq and mode == "max":
        raise ValueError("scale_grad_by_freq is not supported with mode='max' (as torch): a max sends each "
                         "column's gradient to one row, whatever the row's frequency")


def bag_layout(index_ndim: int, has_offsets: bool) -> None:
    if index_ndim == 2 and has_offsets:
        raise ValueError(
            "offsets must be None when indices are 2-D: each row of a 2-D indices array is one bag"
        )
    if index_ndim == 1 and not has_offsets:
        raise ValueError("offsets are required when indices are 1-D (offsets[i] is where bag i starts)")
    if index_ndim not in (1, 2):
        raise ValueError(f"indices of a bag must be 1-D (with offsets) or 2-D (one bag per row), got {index_ndim}-D")


def bag_offsets(n_offsets: int, first, decrease, last, num_indices: int, include_last_offset: bool) -> None:
    """Offsets start at 0, never decrease, never run past the indices.

    The backend passes summaries computed in one vectorised pass: ``first`` and ``last`` entries, and
    ``decrease`` = ``(i, offsets[i-1], offsets[i])`` for the first place they go down, or None.
    """
    if include_last_offset and n_offsets == 0:
        raise ValueError("with include_last_offset=True, offsets needs at least one entry (the end of the last bag)")
    if n_offsets == 0:
        return
    if first != 0:
        raise ValueError(f"offsets must start at 0 (the first bag starts at the first index), got offsets[0]={first}")
    if decrease is not None:
        i, a, b = decrease
        raise ValueError(f"offsets must not decrease, got offsets[{i - 1}]={a} > offsets[{i}]={b}")
    if last > num_indices:
        raise ValueError(
            f"offsets run past the indices: offsets[{n_offsets - 1}]={last} but there are only {num_indices} indices"
        )
    if include_last_offset and last != num_indices:
        # torch 2.x ignores the indices past the last offset for float32 weights but adds them to the
        # last bag for float64: ambiguous input, so we refuse it.
        raise ValueError(
            f"with include_last_offset=True the last offset closes the last bag and must equal the number of "
            f"indices, {num_indices}; got offsets[{n_offsets - 1}]={last}"
        )


def neighbors_k(k, available: int) -> int:
    k = positive(k, "k")
    if k > available:
        raise ValueError(f"k={k} is more than the {available} candidate rows")
    return k


METRICS = ("cosine", "dot", "euclidean")


def metric(name: str) -> None:
    if name not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {name!r}")


def sparse_gradients(sparse, mode=None) -> bool:
    """``sparse=True`` (the weight's gradient as a sparse tensor of the rows the input touched), not with
    a max bag (as torch). With ``scale_grad_by_freq`` too, where torch's backward fails, each sparse row
    is divided by its index's count. Returns it as a bool."""
    if sparse not in (True, False):
        raise TypeError(f"sparse must be True or False, got {sparse!r}")
    if sparse and mode == "max":
        raise ValueError("sparse=True is not supported with mode='max' (as torch): use mode 'sum' or 'mean', "
                         "or dense gradients")
    return bool(sparse)


# --------------------------------------------------------------------------------------------------
# Positions, patches and codebooks (chapter 12)
# --------------------------------------------------------------------------------------------------
def even_dim(value, name: str = "dim") -> int:
    """A positive even int: sines and cosines (and RoPE's rotations) come in pairs of columns."""
    d = positive(value, name)
    if d % 2:
        raise ValueError(f"{name} must be even (the columns come in (sin, cos) pairs), got {d}")
    return d


def rope_base(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
        raise ValueError(f"base must be a positive finite number, got {value!r}")
    return float(value)


def rope_shapes(x_shape: tuple, positions_shape: tuple) -> None:
    """``x`` is ``(..., T, D)`` with D even, ``positions`` is ``(T,)``."""
    if len(x_shape) < 2:
        raise ValueError(f"x must have shape (..., T, D), at least 2-D, got shape {tuple(x_shape)}")
    if x_shape[-1] % 2:
        raise ValueError(f"the last dimension of x must be even (RoPE rotates pairs of columns), got {x_shape[-1]}")
    if tuple(positions_shape) != (x_shape[-2],):
        raise ValueError(f"positions must have shape (T,) = ({x_shape[-2]},), one per row of x's (T, D) "
                         f"blocks, got {tuple(positions_shape)}")


def patch_grid(images_shape: tuple, patch_size: int) -> tuple[int, int, int, int, int, int]:
    """``images`` (N, C, H, W) with H and W divisible by ``patch_size``: ``(N, C, H // p, W // p, p, p)``."""
    p = positive(patch_size, "patch_size")
    if len(images_shape) != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {tuple(images_shape)}")
    n, c, h, w = images_shape
    if h % p or w % p:
        raise ValueError(f"the image height {h} and width {w} must be divisible by patch_size {p} "
                         "(crop or pad the images first)")
    return n, c, h // p, w // p, p, p


def patch_kernel(weight_shape: tuple, images_shape: tuple, bias_shape) -> int:
    """A Conv2d kernel (D, C, p, p) for images (N, C, H, W), bias (D,) or None: returns p."""
    if len(images_shape) != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {tuple(images_shape)}")
    channels = images_shape[1]
    if len(weight_shape) != 4 or weight_shape[2] != weight_shape[3]:
        raise ValueError(f"weight must be a square Conv2d kernel of shape (D, C, p, p), got {tuple(weight_shape)}")
    if weight_shape[1] != channels:
        raise ValueError(f"weight has {weight_shape[1]} input channels but the images have {channels}")
    if bias_shape is not None and tuple(bias_shape) != (weight_shape[0],):
        raise ValueError(f"bias must have shape (D,) = ({weight_shape[0]},), got {tuple(bias_shape)}")
    return positive(weight_shape[2], "the kernel size")


def codebook_shapes(vectors_shape: tuple, codebook_shape: tuple) -> None:
    """``vectors`` (..., D), ``codebook`` (K, D) with K >= 1."""
    if len(codebook_shape) != 2:
        raise ValueError(f"codebook must be 2-D (num_codes, D), got shape {tuple(codebook_shape)}")
    if codebook_shape[0] == 0:
        raise ValueError("codebook must have at least one codeword, got 0 rows")
    if len(vectors_shape) < 1 or vectors_shape[-1] != codebook_shape[1]:
        raise ValueError(f"vectors must have shape (..., D) with D = {codebook_shape[1]} (the codebook's width), "
                         f"got {tuple(vectors_shape)}")
