"""Mixed-dimension embedding tables in PyTorch (chapter 14): popular ids get wide rows, the tail narrow ones.

The same functions and layer as ``embedlib.numpy.mixed_dim`` (whose docstring states the model,
Ginart et al. 2021), on tensors, CPU or CUDA, differentiable: ``mixed_dim_lookup`` is a lookup in
each block followed by a matrix product, and autograd gives the gradients that
``mixed_dim_lookup_backward`` computes by hand. ``mixed_dim_plan`` works on counts, not tables,
and is NumPy's, re-exported. With the same seed the layer starts from the same numbers as NumPy's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from embedlib import _checks
from embedlib.numpy.mixed_dim import MixedDimPlan, check_blocks, check_rank, initial_blocks, mixed_dim_plan
from embedlib.torch import _tensors
from embedlib.torch.layers import Embedding
from embedlib.torch.lookup import gather, scatter_add


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _tables_and_projections(tables, projections):
    t = [_tensors.weight(x, f"tables[{k}]") for k, x in enumerate(tables)]
    p = [_tensors.floats(x, f"projections[{k}]") for k, x in enumerate(projections)]
    sizes, _, dim = check_blocks([tuple(x.shape) for x in t], [tuple(x.shape) for x in p],
                                 [_dtype_name(x) for x in t], [_dtype_name(x) for x in p])
    device = t[0].device
    for k, x in enumerate(t + p):
        if x.device != device:
            name = f"tables[{k}]" if k < len(t) else f"projections[{k - len(t)}]"
            raise ValueError(f"{name} is on {x.device} but tables[0] is on {device}; move one of them")
    return t, p, sizes, dim


def _split(flat_positions: torch.Tensor, sizes):
    """For each block ``k``: ``(where, rows)``, the entries of ``flat_positions`` it holds and their
    rows in its table (as the NumPy backend's ``_split``)."""
    if len(sizes) == 1:
        return [(torch.arange(flat_positions.numel(), device=flat_positions.device), flat_positions)]
    ends = torch.as_tensor(np.cumsum(sizes), device=flat_positions.device)
    block = torch.searchsorted(ends, flat_positions, right=True)
    out, start = [], 0
    for k, n in enumerate(sizes):
        where = torch.nonzero(block == k).reshape(-1)
        out.append((where, flat_positions[where] - start))
        start += n
    return out


def _combine(flat_positions, sizes, dim, dtype, gathers, projections):
    """``out[where_k] = gather_k(rows_k) @ P_k`` for every block, differentiable (out-of-place)."""
    out = torch.zeros(flat_positions.numel(), dim, dtype=dtype, device=flat_positions.device)
    for (where, rows), looked_up, projection in zip(_split(flat_positions, sizes), gathers, projections):
        out = out.index_copy(0, where, looked_up(rows) @ projection)
    return out


def mixed_dim_lookup(positions, tables, projections) -> torch.Tensor:
    """The rows at ``positions`` of a mixed-dimension table (chapter 14), ``(*positions.shape, D)``:
    position ``p`` of block ``k`` gives ``tables[k][p - start_k] @ projections[k]``.

    As ``embedlib.numpy.mixed_dim_lookup``; differentiable w.r.t. the tables and projections.
    Positions are range-checked before any kernel runs.
    """
    t, p, sizes, dim = _tables_and_projections(tables, projections)
    idx = _tensors.indices(positions, t[0].device, "positions")
    _tensors.in_range(idx, sum(sizes), "position")
    flat = idx.reshape(-1).long()
    out = _combine(flat, sizes, dim, t[0].dtype, [lambda rows, w=w: gather(rows, w) for w in t], p)
    return out.reshape(*idx.shape, dim)


def mixed_dim_lookup_backward(positions, grad_output, tables, projections):
    """Gradients of :func:`mixed_dim_lookup` w.r.t. its blocks, by hand (chapter 14):
    ``(grad_tables, grad_projections)``, lists of dense tensors; ``grad E_k = lookup_backward(rows,
    g @ P_k.T, n_k)``, ``grad P_k = E_k[rows].T @ g`` (see the NumPy backend). Equal to autograd's."""
    t, p, sizes, dim = _tables_and_projections(tables, projections)
    idx = _tensors.indices(positions, t[0].device, "positions")
    g = _tensors.floats(grad_output, "grad_output", t[0].device)
    _checks.same_shape(tuple(g.shape), tuple(idx.shape) + (dim,), "grad_output", "(*positions.shape, D)")
    _tensors.in_range(idx, sum(sizes), "position")
    flat, g = idx.reshape(-1).long(), g.reshape(idx.numel(), dim)
    grad_tables, grad_projections = [], []
    with torch.no_grad():
        for (where, rows), table, projection in zip(_split(flat, sizes), t, p):
            gk = g[where]
            grad_tables.append(scatter_add(rows, gk @ projection.T.to(gk.dtype), table.shape[0]).to(table.dtype))
            grad_projections.append((table.detach()[rows].T.to(gk.dtype) @ gk).to(table.dtype))
    return grad_tables, grad_projections


class MixedDimEmbedding(nn.Module):
    """A mixed-dimension embedding layer (chapter 14), an ``nn.Module``: the arguments, names and
    initial numbers of ``embedlib.numpy.MixedDimEmbedding``, plus ``device``.

    ``blocks[k]`` is an ``embedlib.torch.Embedding`` holding block ``k``'s table ``(n_k, d_k)``,
    ``projections[k]`` an ``nn.Parameter`` ``(d_k, D)`` (in a ``ParameterList``), ``rank`` a buffer
    (or None, the identity); autograd trains them all. ``forward(ids)`` returns ``(*ids.shape, D)``.
    """

    def __init__(self, block_sizes, block_dims, embedding_dim, *, rank=None, init_std=0.1, seed=None,
                 dtype=torch.float64, device=None):
        super().__init__()
        tables, projections = initial_blocks(block_sizes, block_dims, embedding_dim, init_std=init_std,
                                             seed=seed)
        self._setup([torch.as_tensor(x, dtype=dtype, device=device) for x in tables],
                    [torch.as_tensor(x, dtype=dtype, device=device) for x in projections], rank)

    @classmethod
    def from_plan(cls, plan: MixedDimPlan, embedding_dim, *, init_std=0.1, seed=0, dtype=torch.float64,
                  device=None):
        """A fresh layer laid out as ``plan`` (``mixed_dim_plan``), ids mapped by ``plan.rank``."""
        return cls(plan.block_sizes, plan.block_dims, embedding_dim, rank=plan.rank, init_std=init_std,
                   seed=seed, dtype=dtype, device=device)

    @classmethod
    def from_weights(cls, tables, projections, *, rank=None):
        """A layer whose blocks and projections are trainable copies of ``tables`` and ``projections``."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        t, p, _, _ = _tables_and_projections(tables, projections)
        layer._setup([x.detach().clone() for x in t], [x.detach().clone() for x in p], rank)
        return layer

    def _setup(self, tables, projections, rank):
        t, p, sizes, dim = _tables_and_projections(tables, projections)
        device = t[0].device
        if rank is not None:
            r = rank.detach().cpu().numpy() if isinstance(rank, torch.Tensor) else np.asarray(rank)
            kind = "bool" if r.dtype.kind == "b" else "int" if r.dtype.kind in "iu" else "other"
            distinct = np.unique(r).size if kind == "int" and r.ndim == 1 else -1
            stats = (int(r.min()), distinct, int(r.max())) if r.size and kind == "int" else (0, r.size, 0)
            check_rank(r.shape, kind, str(r.dtype), stats, sum(sizes))
            rank = torch.as_tensor(r.astype(np.int64), device=device)
        self.blocks = nn.ModuleList([Embedding.from_weight(x) for x in t])
        self.projections = nn.ParameterList([nn.Parameter(x) for x in p])
        self.register_buffer("rank", rank)
        self._dim = dim

    @property
    def num_embeddings(self) -> int:
        return sum(b.num_embeddings for b in self.blocks)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    @property
    def block_sizes(self) -> tuple:
        return tuple(b.num_embeddings for b in self.blocks)

    @property
    def block_dims(self) -> tuple:
        return tuple(b.embedding_dim for b in self.blocks)

    @property
    def nbytes(self) -> int:
        """Bytes of all block tables and projections (what the layer stores, ``rank`` aside)."""
        return sum(w.numel() * w.element_size() for w in [b.weight for b in self.blocks] + list(self.projections))

    @property
    def weight(self) -> torch.Tensor:
        """The full ``(V, D)`` table it represents, in id order, computed on each access, without
        gradient (a snapshot: ``forward(torch.arange(V))`` is the differentiable version)."""
        with torch.no_grad():
            full = torch.cat([b.weight @ p for b, p in zip(self.blocks, self.projections)])
            return full if self.rank is None else full[self.rank]

    def forward(self, ids) -> torch.Tensor:
        device = self.projections[0].device
        idx = _tensors.indices(ids, device, "ids")
        _tensors.in_range(idx, self.num_embeddings)
        flat = idx.reshape(-1).long()
        positions = flat if self.rank is None else self.rank[flat]
        out = _combine(positions, self.block_sizes, self._dim, self.projections[0].dtype,
                       list(self.blocks), list(self.projections))
        return out.reshape(*idx.shape, self._dim)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self._dim}, block_sizes={list(self.block_sizes)}, "
                f"block_dims={list(self.block_dims)}")


__all__ = ["MixedDimEmbedding", "MixedDimPlan", "mixed_dim_lookup", "mixed_dim_lookup_backward", "mixed_dim_plan"]
