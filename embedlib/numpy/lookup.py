"""The embedding lookup and its backward pass (chapters 2 and 4)."""
from __future__ import annotations


from embedlib import _checks
from embedlib.numpy import _arrays, _segments, _threads
from embedlib.numpy.renorm import unchecked_renorm_


def lookup(indices, weight, *, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
           sparse=False, deterministic=None):
    """Rows of ``weight`` selected by ``indices``: shape ``(*indices.shape, D)``.

    The same values as :func:`onehot_matmul` (chapter 2 proves it) without the one-hot array.
    ``padding_idx`` only matters for gradients (:func:`lookup_backward`); it is checked here too so
    both backends accept the same arguments. So is ``deterministic`` (True, False or None), which
    chooses the GPU backward in the torch backend; NumPy's results are always the same bits.
    With ``max_norm``, as ``F.embedding``: the rows named by ``indices`` whose ``norm_type``-norm
    exceeds it are rescaled in place in ``weight`` (which must then be a NumPy array) first, after
    every check. ``scale_grad_by_freq`` only matters for gradients, which NumPy's function does not
    track: accepted so that both backends take the same arguments (the NumPy layers apply it). So is
    ``sparse`` (True or False): the gradients of NumPy's layers are sparse rows either way.
    """
    idx = _arrays.indices(indices)
    w = _arrays.weight(weight)
    _arrays.in_range(idx, w.shape[0])
    _checks.padding_idx(padding_idx, w.shape[0])
    limit = _checks.max_norm(max_norm, norm_type)
    _arrays.deterministic(deterministic)
    _checks.sparse_gradients(sparse)
    if limit is not None:
        _arrays.in_place(weight, "max_norm")
        unchecked_renorm_(w, idx, limit, float(norm_type))
    # np.take, on all cores for large batches: faster than w[idx] (chapter 3 measures it).
    return _threads.take_rows(w, idx)


def lookup_backward(indices, grad_output, num_embeddings, *, padding_idx=None, deterministic=None):
    """Gradient of ``lookup`` w.r.t. the weight: ``one_hot(indices).T @ grad_output``, shape ``(V, D)``.

    A scatter-add (chapter 4): row ``indices[k]`` receives ``grad_output[k]``, and repeated indices
    add up (``W[idx] += g`` would keep only one of them). The ``padding_idx`` row gets zero.
    The sums of repeated rows are added in an order fixed by the indices, so the result is the same
    bits on every run whatever ``deterministic`` says (it matters only in the torch backend).
    """
    idx = _arrays.indices(indices)
    num_embeddings = _checks.count(num_embeddings, "num_embeddings")
    g = _arrays.floats(grad_output, "grad_output")
    if g.ndim != idx.ndim + 1 or g.shape[:-1] != idx.shape:
        raise ValueError(
            f"grad_output must have shape (*indices.shape, embedding_dim) = {idx.shape + ('D',)}, got {g.shape}"
        )
    _arrays.in_range(idx, num_embeddings)
    pad = _checks.padding_idx(padding_idx, num_embeddings)
    _arrays.deterministic(deterministic)
    # Group the repeats by a sort and add them pairwise: several times faster than np.add.at on a
    # 2-D array, and the same bits on every run (chapter 3 measures it).
    out = _segments.scatter_sum(idx.reshape(-1), g.reshape(idx.size, g.shape[-1]), num_embeddings)
    if pad is not None:
        out[pad] = 0
    return out
