"""PyTorch's own embedding tests, ported to ``embedlib.torch`` with PyTorch as the reference (issue 12).

Two sources, both from torch 2.13.0:

* ``test/nn/test_embedding.py``: every test that applies on the CPU, as ``test_ported_<its name>``
  (each cites the original), run against ``el.lookup`` / ``el.embedding_bag`` / ``el.Embedding`` /
  ``el.EmbeddingBag`` and, wherever it helps, also against PyTorch's own function or layer on the same
  weight: outputs, in-place renormalisation and gradients. PyTorch's ``@dtypes`` for the CPU are kept
  (float16 and bfloat16 included); ``nn.X.from_pretrained`` becomes embedlib's ``from_weight`` (a copy)
  where the test does not depend on sharing memory or freezing.
* the OpInfo samples of ``nn.functional.embedding`` and ``nn.functional.embedding_bag``
  (``sample_inputs_embedding``, ``sample_inputs_embedding_bag``, ``error_inputs_embedding``, transcribed in
  ``tests/pytorch_cases.py`` and checked against PyTorch's generators by ``test_opinfo_port_matches_pytorch``),
  as ``test_opinfo_*``: every sample in every dtype OpInfo lists for the CPU (float16, bfloat16,
  float32, float64), through the function and the layer; OpInfo's gradcheck, gradgradcheck,
  forward-AD, noncontiguous-sample and error-input checks on them.

Every feature these tests use exists in embedlib (sparse gradients and forward-mode AD included, since
issue 12); each ``sparse=True`` variant runs all of its cases in one test. Where embedlib deliberately
differs from PyTorch, the test asserts both
behaviours (``differs``) and the README's table lists the difference; ``test_difference_*`` at the end
cover the differences that PyTorch's tests do not reach.

Not ported, because they need CUDA, another device or a torch internal with no embedlib counterpart:
``test_large_tensors`` (CUDA, 40 GB), ``test_embedding_max_norm_device`` (CUDA only; its CPU twin
``test_embedding_max_norm`` is ported), the CUDA halves of ``test_move_sparse_half_embedding`` and of the
``dtypesIfCUDA`` lists, and in ``test_embedding_bag_dimension_errors`` the calls of ``torch.embedding_bag``,
``torch._embedding_bag`` and ``torch._embedding_bag_forward_only`` (ATen entry points; its ``F.embedding_bag``
call is ported). ``test_embedding_max_norm_unsorted_repeating_indices`` compares CPU with CUDA; it is
ported as embedlib against PyTorch on the CPU.

Every test starts from fixed torch and ``random`` seeds and runs on one intra-op thread (the tensors are
tiny); the global generators and thread count are restored afterwards.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import make_tensor

import embedlib.torch as el
from pytorch_cases import (FLOAT_DTYPES, INDEX_DTYPES, PREC, PYTORCH_SIGNATURES_SCRIPT,
                           GRADIENT_OPTIONS, embedding_bag_reference_impl, embedding_bag_samples,
                           embedding_error_inputs, embedding_samples, noncontiguous_like)

HERE = pathlib.Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

#: tolerances for results that may round differently from PyTorch's (sums in another order)
TOL = {
    torch.float64: dict(rtol=1e-7, atol=1e-7),
    torch.float32: dict(rtol=1.3e-6, atol=1e-5),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=3.2e-2, atol=1e-1),
}


def close(actual, expected, **kwargs):
    """``assert_close`` with per-dtype tolerances (overridable); sparse gradients compared densely."""
    if isinstance(actual, torch.Tensor) and actual.is_sparse:
        actual = actual.to_dense()
    if isinstance(expected, torch.Tensor) and expected.is_sparse:
        expected = expected.to_dense()
    options = dict(TOL.get(getattr(expected, "dtype", None), {}))
    options.update(kwargs)
    torch.testing.assert_close(actual, expected, **options)


def differs(torch_call, torch_error, el_call, el_error, match=None):
    """A deliberate difference: PyTorch raises ``torch_error`` (returns normally when None), embedlib
    raises ``el_error`` (its message matching ``match``). Both halves are checked, so a change on
    either side shows up here and in the README's table."""
    if torch_error is None:
        torch_call()
    else:
        with pytest.raises(torch_error):
            torch_call()
    with pytest.raises(el_error, match=match):
        el_call()


@contextlib.contextmanager
def default_dtype(dtype):
    """``common_utils.set_default_dtype``."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def el_like(ref: nn.Module):
    """embedlib's layer with the weight (a copy) and options of PyTorch's layer ``ref``."""
    opts = dict(padding_idx=ref.padding_idx, max_norm=ref.max_norm, norm_type=ref.norm_type)
    if isinstance(ref, nn.EmbeddingBag):
        return el.EmbeddingBag.from_weight(ref.weight.detach(), mode=ref.mode,
                                           include_last_offset=ref.include_last_offset, **opts)
    return el.Embedding.from_weight(ref.weight.detach(), **opts)


def sparse_kw(sparse: bool) -> dict:
    """``sparse=True`` only where the original passes it, so the dense cases run on today's embedlib."""
    return {"sparse": True} if sparse else {}


SPARSE_PARAM = pytest.param(True, id="sparse")
DENSE_PARAM = pytest.param(False, id="dense")


def each_case_dense_and_sparse(cases, ids=lambda c: dtype_id(c)):
    """``(cases, sparse)`` parameters: each case alone, without and with sparse=True (the original
    tests loop over both)."""
    return [pytest.param([c], sparse, id=f"{ids(c)}-{'sparse' if sparse else 'dense'}")
            for c in cases for sparse in (False, True)]


INDEX_DTYPE_PAIRS = list(itertools.product(INDEX_DTYPES, INDEX_DTYPES))  # (indices, offsets), as PyTorch's @dtypes


def dtype_id(d) -> str:
    """``int32`` for a dtype, ``int32-int64-float16`` for a tuple of them."""
    if isinstance(d, (tuple, list)):
        return "-".join(dtype_id(x) for x in d)
    return str(d).replace("torch.", "")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tensors are tiny, and a second thread only waits (on a loaded
    2-core machine each small op then took milliseconds); results do not depend on it either."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same torch and ``random`` state (PyTorch's harness seeds each test),
    and leaves the global generators as they were."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random.seed(0)
        yield
    random.setstate(state)


# ==================================================================================================
# test/nn/test_embedding.py: TestEmbeddingNN
# ==================================================================================================
def test_ported_embedding_max_norm_unsorted_repeating_indices():
    # test_embedding_max_norm_unsorted_repeating_indices: the original compares CPU with CUDA (CUDA
    # only); here embedlib's layer against nn.Embedding on the CPU, same table, 4,000 unsorted repeats.
    torch.manual_seed(0)
    ref = torch.nn.Embedding(num_embeddings=20, embedding_dim=64, max_norm=1.0)
    layer = el_like(ref)
    ix = torch.arange(2, dtype=torch.long).repeat(2000)
    close(layer(ix), ref(ix))
    close(layer.weight, ref.weight)


def test_ported_embedding_sparse_basic():
    # test_embedding_sparse_basic
    embedding = el.Embedding(10, 20, sparse=True)
    input = torch.tensor([[0, 2, 4, 5], [4, 3, 0, 9]], dtype=torch.long)
    embedding(input).sum().backward()
    assert embedding.weight.grad.is_sparse
    assert embedding.weight.grad.shape == embedding.weight.shape


def test_ported_embedding_sparse_empty_tensor():
    # test_embedding_sparse_empty_tensor
    embedding = el.Embedding(0, 0, sparse=True)
    input = torch.tensor([], dtype=torch.int64)
    embedding(input).sum().backward()
    assert embedding.weight.grad.is_sparse
    assert embedding.weight.grad.shape == embedding.weight.shape

    embedding = el.Embedding(10, 0, sparse=True)
    input = torch.LongTensor([[0, 2, 4, 5], [4, 3, 0, 9]])
    embedding(input).sum().backward()
    assert embedding.weight.grad.is_sparse
    assert embedding.weight.grad.shape == embedding.weight.shape


@pytest.mark.parametrize("sparse", [DENSE_PARAM, SPARSE_PARAM])
def test_ported_move_sparse_half_embedding(sparse):
    # test_move_sparse_half_embedding (CUDA half of it skipped; the dense variant is the same moves)
    embedding = el.Embedding(10, 3, **sparse_kw(sparse))
    assert embedding.weight.device.type == "cpu"
    assert embedding.weight.dtype == torch.get_default_dtype()
    embedding.to(torch.float16)
    assert embedding.weight.dtype == torch.float16
    assert embedding.embedding_dim == 3
    assert embedding.num_embeddings == 10
    idx = torch.tensor([1, 9, 1])
    assert torch.equal(embedding(idx), F.embedding(idx, embedding.weight.detach()))


def test_ported_embedding_max_norm():
    # test_embedding_max_norm, plus: output and renormalised table equal nn.Embedding's
    ref = nn.Embedding(22, 5, max_norm=1.0)
    embedding = el_like(ref)
    input = torch.tensor([2, 8, 8, 6], dtype=torch.long)
    output = embedding(input)
    assert torch.equal(output[1], output[2])
    assert output.data.norm(p=2, dim=1).le(1).all()
    close(output, ref(input))
    close(embedding.weight, ref.weight)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                                   torch.float, torch.double], ids=dtype_id)
def test_ported_embedding_from_pretrained(dtype):
    # test_embedding_from_pretrained, with from_weight (a trainable copy), embedlib's counterpart today;
    # from_pretrained itself: test_ported_embedding_from_pretrained_freeze below.
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=dtype)
    input = torch.LongTensor([0, 1])
    if dtype.is_floating_point:
        embedding = el.Embedding.from_weight(a)
        assert torch.equal(a, embedding.weight.data)
        output = embedding(input)
        assert torch.equal(a, output)
        return
    # Deliberate difference: PyTorch looks rows up in an integer table (from_pretrained freezes it, so
    # no gradient is needed); embedlib's weights are floating point, an integer table is a TypeError.
    assert torch.equal(nn.Embedding.from_pretrained(a)(input), a)
    assert torch.equal(F.embedding(input, a), a)
    with pytest.raises(TypeError, match="floating-point"):
        el.Embedding.from_weight(a)
    with pytest.raises(TypeError, match="floating-point"):
        el.lookup(input, a)


def test_ported_embedding_from_pretrained_freeze():
    # test_embedding_from_pretrained / test_embedding_bag_from_pretrained through from_pretrained itself:
    # PyTorch's layer wraps the given tensor (shared memory) and freezes it unless freeze=False.
    for cls, freeze in itertools.product(["Embedding", "EmbeddingBag"], [True, False]):
        _embedding_from_pretrained_freeze(cls, freeze)


def _embedding_from_pretrained_freeze(cls, freeze):
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    ref = getattr(nn, cls).from_pretrained(a, freeze=freeze)
    embedding = getattr(el, cls).from_pretrained(a, freeze=freeze)
    assert embedding.weight.data_ptr() == a.data_ptr() == ref.weight.data_ptr()
    assert embedding.weight.requires_grad == ref.weight.requires_grad == (not freeze)
    input = torch.tensor([0, 1], dtype=torch.long)
    args = (input,) if cls == "Embedding" else (input, torch.arange(input.size(0)))
    assert torch.equal(embedding(*args), a)


def test_ported_embedding_bag_from_pretrained():
    # test_embedding_bag_from_pretrained (from_weight: see test_ported_embedding_from_pretrained)
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    embedding = el.EmbeddingBag.from_weight(a)
    assert torch.equal(a, embedding.weight)

    input = torch.tensor([0, 1], dtype=torch.long)
    output = embedding(input, torch.arange(input.size(0)))
    assert torch.equal(a, output)


def test_ported_embedding_from_pretrained_padding_idx():
    # test_embedding_from_pretrained_padding_idx (from_weight)
    padding_idx = 2
    padding_vec = torch.ones(3) * 7
    embeddings = torch.rand(4, 3, requires_grad=True)
    with torch.no_grad():
        embeddings[padding_idx] = padding_vec
    embedding_nn = el.Embedding.from_weight(embeddings, padding_idx=padding_idx)
    assert torch.equal(embedding_nn.weight[padding_idx], padding_vec)


def test_ported_embedding_bag_from_pretrained_padding_idx():
    # test_embedding_bag_from_pretrained_padding_idx (from_weight)
    padding_idx = 2
    embeddings = torch.rand(4, 3, requires_grad=True)
    embedding_nn = el.EmbeddingBag.from_weight(embeddings, padding_idx=padding_idx)
    assert torch.equal(embedding_nn.weight, embeddings)


@pytest.mark.parametrize("api", ["from_weight", "from_pretrained"])
def test_ported_embedding_from_pretrained_options(api):
    # test_embedding_from_pretrained_options. "from_pretrained" is the original: the layer shares `a`,
    # so `a` itself is renormalised. "from_weight" (a copy): the layer's own table is renormalised,
    # as nn.Embedding.from_pretrained's, and the outputs match.
    with default_dtype(torch.double):
        a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        opts = {"max_norm": 2.0, "norm_type": 0.5, "scale_grad_by_freq": False, "sparse": True}
        input = torch.LongTensor([0, 1])
        if api == "from_pretrained":
            embedding = el.Embedding.from_pretrained(a, **opts)
            output = embedding(input)
            # test output and that weight matrix was renormalized
            assert torch.equal(a, output)
            assert a.ne(torch.arange(1, 7, dtype=a.dtype).view(2, 3)).all()
            assert output.data.norm(p=opts["norm_type"], dim=1).le(opts["max_norm"]).all()
            return
        ref = nn.Embedding.from_pretrained(a.clone(), **opts)
        embedding = el.Embedding.from_weight(a, max_norm=opts["max_norm"], norm_type=opts["norm_type"])
        output = embedding(input)
        close(output, ref(input))
        assert torch.equal(embedding.weight.detach(), output.detach())
        assert embedding.weight.ne(torch.arange(1, 7, dtype=a.dtype).view(2, 3)).all()
        assert output.data.norm(p=opts["norm_type"], dim=1).le(opts["max_norm"]).all()


def test_ported_embedding_functional():
    # test_embedding_functional, embedlib's layer against embedlib's function and F.embedding
    a = torch.tensor([[1, 3, 2], [0, 2, 1]], dtype=torch.long)
    embeddings = torch.rand(4, 3, requires_grad=True)

    embed_old = el.Embedding(4, 3)
    embed_old.weight.data = embeddings.data
    assert torch.equal(embed_old.weight.data, embeddings.data)
    res_old = embed_old(a)

    res_F = el.lookup(a, embeddings)
    assert torch.equal(res_old, res_F)
    assert torch.equal(res_F, F.embedding(a, embeddings))

    embed_old = el.Embedding(4, 3)
    embed_old = embed_old.from_weight(embeddings, padding_idx=2)
    res_old = embed_old(a)
    res_F = el.lookup(a, embeddings, padding_idx=2)
    assert torch.equal(res_old, res_F)
    assert torch.equal(res_F, F.embedding(a, embeddings, padding_idx=2))


def test_ported_embedding_bag_functional():
    # test_embedding_bag_functional, embedlib's layer against embedlib's function and F.embedding_bag
    a = torch.tensor([[1, 3, 2], [0, 2, 1]], dtype=torch.long)
    embeddings = torch.rand(4, 3, requires_grad=True)

    embed_old = el.EmbeddingBag(4, 3)
    embed_old.weight = torch.nn.Parameter(embeddings)
    res_old = embed_old(a)

    res_F = el.embedding_bag(a, embeddings)
    assert torch.equal(res_old, res_F)
    close(res_F, F.embedding_bag(a, embeddings))

    embed_old = el.EmbeddingBag(4, 3)
    embed_old = embed_old.from_weight(embeddings, padding_idx=2)
    res_old = embed_old(a)
    res_F = el.embedding_bag(a, embeddings, padding_idx=2)
    assert torch.equal(res_old, res_F)
    close(res_F, F.embedding_bag(a, embeddings, padding_idx=2))


def test_ported_embedding_bag_padding_idx_error():
    # test_embedding_bag_padding_idx_error. Deliberate difference: PyTorch raises RuntimeError from the
    # function and AssertionError from the layer; embedlib a ValueError from both.
    a = torch.tensor([[1, 3, 2], [0, 2, 1]], dtype=torch.long)
    num_embeddings = 4
    num_features = 3
    embeddings = torch.rand(num_embeddings, num_features, requires_grad=True)

    for padding_idx in range(-(num_embeddings + 2), (num_embeddings + 2)):
        if (padding_idx < -num_embeddings) or (padding_idx >= num_embeddings):
            differs(lambda: F.embedding_bag(a, embeddings, padding_idx=padding_idx), RuntimeError,
                    lambda: el.embedding_bag(a, embeddings, padding_idx=padding_idx), ValueError,
                    match=r"padding_idx must be in \[-4, 4\)")
            differs(lambda: nn.EmbeddingBag(num_embeddings, num_features, padding_idx=padding_idx), AssertionError,
                    lambda: el.EmbeddingBag(num_embeddings, num_features, padding_idx=padding_idx), ValueError,
                    match=r"padding_idx must be in \[-4, 4\)")
        else:
            close(el.embedding_bag(a, embeddings, padding_idx=padding_idx),
                  F.embedding_bag(a, embeddings, padding_idx=padding_idx))
            el.EmbeddingBag(num_embeddings, num_features, padding_idx=padding_idx)


def test_ported_embeddingbag_from_pretrained():
    # test_embeddingbag_from_pretrained (from_weight)
    a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    embeddingbag = el.EmbeddingBag.from_weight(a)
    assert torch.equal(a, embeddingbag.weight.data)

    input = torch.LongTensor([[0, 1]])
    output = embeddingbag(input)
    close(a.mean(0, keepdim=True), output)


@pytest.mark.parametrize("api", ["from_weight", "from_pretrained"])
def test_ported_embeddingbag_from_pretrained_options(api):
    # test_embeddingbag_from_pretrained_options ("from_weight" / "from_pretrained" as in
    # test_ported_embedding_from_pretrained_options)
    with default_dtype(torch.double):
        a = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        opts = {"max_norm": 2.0, "norm_type": 0.5, "scale_grad_by_freq": False, "mode": "max", "sparse": False}
        input = torch.LongTensor([[0, 1]])
        if api == "from_pretrained":
            embeddingbag = el.EmbeddingBag.from_pretrained(a, **opts)
            output = embeddingbag(input)
            assert torch.equal(a.max(0, keepdim=True)[0], output)
            assert a.ne(torch.arange(1, 7, dtype=a.dtype).view(2, 3)).all()
            assert a.norm(p=opts["norm_type"], dim=1).le(opts["max_norm"]).all()
            return
        ref = nn.EmbeddingBag.from_pretrained(a.clone(), **opts)
        embeddingbag = el.EmbeddingBag.from_weight(a, max_norm=2.0, norm_type=0.5, mode="max")
        output = embeddingbag(input)
        close(output, ref(input))
        close(embeddingbag.weight, ref.weight)
        w = embeddingbag.weight.detach()
        assert torch.equal(w.max(0, keepdim=True)[0], output.detach())
        assert w.ne(torch.arange(1, 7, dtype=a.dtype).view(2, 3)).all()
        assert w.norm(p=opts["norm_type"], dim=1).le(opts["max_norm"]).all()


def test_ported_embeddingbag_include_last_offset():
    # test_embeddingbag_include_last_offset (PyTorch issue 89677)
    ref = nn.EmbeddingBag(100, 3, include_last_offset=True, padding_idx=61)
    embeddingbag = el_like(ref)
    input = torch.tensor([0, 1, 2, 3])
    out2 = embeddingbag(input, torch.tensor([0, 3, 4]))

    weight = embeddingbag.weight
    row0 = weight[0:3].mean(0)
    row1 = weight[3]
    ref_out = torch.stack([row0, row1])
    close(ref_out, out2)
    close(out2, ref(input, torch.tensor([0, 3, 4])))
    # Deliberate difference: a last offset (3) short of len(input) (4). PyTorch returns the same bags,
    # the index past the last offset added to the last bag (the original asserts it); embedlib refuses
    # the ambiguous input with a ValueError.
    close(ref(input, torch.tensor([0, 3, 3])), ref_out)
    differs(lambda: ref(input, torch.tensor([0, 3, 3])), None,
            lambda: embeddingbag(input, torch.tensor([0, 3, 3])), ValueError,
            match="the last offset closes the last bag and must equal the number of indices, 4")


# ==================================================================================================
# test/nn/test_embedding.py: TestEmbeddingNNDeviceType, instantiated for the CPU
# ==================================================================================================
def test_ported_embedding_dense_grad():
    # test_embedding_dense_grad: gradcheck and gradgradcheck of the lookup in float64
    with default_dtype(torch.double):
        embd = el.Embedding(20, 20)
        weight = embd.weight
        inp = torch.tensor([[0, 1, 1, 2], [3, 5, 7, 11]], dtype=torch.long)

        def fn(weight):
            return el.lookup(inp, weight)

        # (fast_mode: PyTorch's cheaper check of the same Jacobians, by random projections; the full
        # one takes seconds for this 400-entry table)
        assert torch.autograd.gradcheck(fn, (weight,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (weight,), fast_mode=True)


def test_ported_embedding_scalar_weight_error():
    # test_embedding_scalar_weight_error. Deliberate difference: PyTorch RuntimeError, embedlib ValueError.
    indices = torch.rand(2, 2).long()
    weights = [torch.tensor(1.0), torch.tensor(1.0).reshape(1, 1, 1)]
    for weight in weights:
        differs(lambda: F.embedding(indices, weight), RuntimeError,
                lambda: el.lookup(indices, weight), ValueError, match="weight must be 2-D")


@pytest.mark.parametrize("sparse", [DENSE_PARAM, SPARSE_PARAM])
def test_ported_embedding_backward(sparse):
    # test_embedding_backward (CPU: float64). The original checks the sparse gradient's indices and
    # values; the dense variant checks the same gradient, densified, on today's embedlib.
    dtype = torch.float64
    embedding = el.Embedding(10, 3, **sparse_kw(sparse))
    tensor = torch.tensor([[7, 1, 3]])
    ones = torch.tensor(1.0, dtype=dtype).expand(3, 3)
    tensorTwice = tensor.repeat(1, 2)
    onesTwice = torch.cat((ones, ones))

    embedding = embedding.to(dtype=dtype)

    def check(indices, values):
        grad = embedding.weight.grad
        if sparse:
            assert torch.equal(grad._indices(), indices)
            assert torch.equal(grad._values(), values)
        else:
            assert torch.equal(grad, torch.sparse_coo_tensor(indices, values, (10, 3), check_invariants=True).to_dense())

    embedding.zero_grad()
    embedding(tensor[0]).sum().backward()
    check(tensor, ones)

    embedding.zero_grad()
    embedding(tensor[0]).sum().backward()
    embedding(tensor[0]).sum().backward()
    check(tensorTwice, onesTwice)

    embedding.zero_grad()
    embedding(tensor[0]).sum().backward()
    tensor[0, 0] = 8
    embedding(tensor[0]).sum().backward()
    tensorTwice[0, 3] = 8
    check(tensorTwice, onesTwice)


@pytest.mark.parametrize("api", ["layer", "function"])
def test_ported_embedding_max_norm_backward(api):
    # test_embedding_max_norm_backward (CPU: float32). "function" is the original (F.embedding with
    # max_norm); "layer" the same through el.Embedding(max_norm=1.0), which has the option today.
    dtype = torch.float32
    weight = torch.randn((4, 4), dtype=dtype) * 2
    weight.requires_grad_()
    inp_list = [0, 1, 2, 2]
    inp = torch.tensor(inp_list)
    if api == "function":
        out = el.lookup(inp, weight, max_norm=1.0).sum()
        out.backward()
        grad = weight.grad
    else:
        layer = el.Embedding.from_weight(weight.detach(), max_norm=1.0)
        layer(inp).sum().backward()
        grad = layer.weight.grad

    expected_grad = torch.tensor([[1.0, 1.0, 2.0, 0.0]], dtype=dtype).transpose(0, 1).expand(4, 4)
    assert torch.equal(grad, expected_grad)


@pytest.mark.parametrize("api", ["function", "layer"])
def test_ported_embedding_max_norm_fwd_AD(api):
    # test_embedding_max_norm_fwd_AD (CPU: float32); "function" is the original, "layer" needs only forward AD
    dtype = torch.float32
    weight = torch.randn((4, 4), dtype=dtype) * 2
    tangent = torch.ones((4, 4), dtype=dtype)
    inp = torch.tensor([[0, 1], [2, 2]])
    with torch.autograd.forward_ad.dual_level():
        dual_weight = torch.autograd.forward_ad.make_dual(weight, tangent)
        if api == "function":
            out = el.lookup(inp, dual_weight, max_norm=1.0)
        else:
            layer = el.Embedding(4, 4, max_norm=1.0)
            del layer.weight
            layer.weight = dual_weight  # a plain tensor attribute, as torch.func.functional_call would set
            out = layer(inp)
        jvp = torch.autograd.forward_ad.unpack_dual(out).tangent

    expected_grad = torch.ones((2, 2, 4), dtype=dtype)
    assert torch.equal(jvp, expected_grad)


def _embedding_padding_idx_case(sparse):
    dtype = torch.float32
    make = lambda **kw: el.Embedding(10, 20, **kw, **sparse_kw(sparse)).to("cpu", dtype)  # noqa: E731
    embedding = make(padding_idx=0)
    input = torch.tensor([[0, 2, 4, 5], [4, 3, 0, 9]], dtype=torch.long)
    output = embedding(input)
    assert output[0][0].sum() == 0
    assert output[1][2].sum() == 0

    # negative indexing check for padding_idx
    # padding_idx=-2, num_embeddings=10 ==> index 8 padded
    embedding = make(padding_idx=-2)
    input = torch.tensor([[0, 2, 8, 5], [4, 8, 0, 9]], dtype=torch.long)
    output = embedding(input)
    assert output[0][2].sum() == 0
    assert output[1][1].sum() == 0

    # change padding vector
    padding_vector = torch.ones(20, dtype=dtype)
    embedding = make(padding_idx=2)
    with torch.no_grad():
        embedding.weight[2] = padding_vector
    input = torch.tensor([0, 2], dtype=torch.long)
    output = embedding(input)
    assert torch.equal(output[1], padding_vector)


@pytest.mark.parametrize("sparse", [DENSE_PARAM, SPARSE_PARAM])
def test_ported_embedding_padding_idx(sparse):
    # test_embedding_padding_idx (CPU: float32). The original runs each step dense and then sparse=True;
    # here "dense" runs the dense steps and the rest, "sparse" the sparse steps.
    _embedding_padding_idx_case(sparse)
    if sparse:
        return
    dtype = torch.float32
    # out of bounds check for padding_idx. Deliberate difference: PyTorch AssertionError, embedlib ValueError.
    for bad in (25, -25):
        differs(lambda: nn.Embedding(num_embeddings=10, embedding_dim=20, padding_idx=bad), AssertionError,
                lambda: el.Embedding(num_embeddings=10, embedding_dim=20, padding_idx=bad), ValueError,
                match=r"padding_idx must be in \[-10, 10\)")

    padding_idx = 0
    embedding = el.Embedding(5, 2, padding_idx=padding_idx).to("cpu", dtype)
    ref = nn.Embedding(5, 2, padding_idx=padding_idx).to("cpu", dtype)
    ref.weight.data.copy_(embedding.weight)
    for n in (1, 2, 1000):  # Need large N to trigger all the methods we have implemented
        for other_indices in ([], [1, 3], [2]):
            indices = torch.tensor(other_indices + [padding_idx] * n, dtype=torch.long)
            pre = embedding.weight[padding_idx].clone()
            embedding(indices).sum().backward()
            ref(indices).sum().backward()
            close(embedding.weight.grad, ref.weight.grad)
            after = (embedding.weight + embedding.weight.grad)[padding_idx]
            embedding.zero_grad()
            ref.zero_grad()
            assert torch.equal(after, pre)

            # test double backward
            emb_sum = embedding(indices).sum()
            emb_grad = torch.autograd.grad(outputs=emb_sum, inputs=list(embedding.parameters()), retain_graph=True)
            scalar = emb_grad[0].sum() + emb_sum
            scalar.backward()
            after = (embedding.weight + embedding.weight.grad)[padding_idx]
            embedding.zero_grad()
            assert torch.equal(after, pre)


@pytest.mark.parametrize("cases,sparse", each_case_dense_and_sparse([torch.float32, torch.float64]))
def test_ported_embedding_bag_1D_padding_idx(cases, sparse):
    # test_embedding_bag_1D_padding_idx: see _ported_embedding_bag_1D_padding_idx
    for dtype in cases:
        _ported_embedding_bag_1D_padding_idx(dtype, sparse)


def _ported_embedding_bag_1D_padding_idx(dtype, sparse):
    # test_embedding_bag_1D_padding_idx (CPU: float32, float64): 1-D input with offsets against the same
    # bags as a 2-D input filled with padding, each also against F.embedding_bag on the same weights.
    # The original loops over sparse in (False, True); here that loop is the "sparse" parameter.
    num_features = 3
    max_indices_per_bag = 10
    num_bags = 10
    num_words = 100

    def gen_1D_indices_offsets(include_last_offset, allpad):
        indices = []
        offsets = []
        cur_offset = 0

        # Make one bag full and one bag empty, for extra coverage
        empty_bag = random.randint(0, num_bags - 1)
        full_bag = empty_bag
        while full_bag == empty_bag:
            full_bag = random.randint(0, num_bags - 1)

        for bag in range(num_bags):
            offsets.append(cur_offset)
            if bag == full_bag:
                bag_size = max_indices_per_bag
            elif bag == empty_bag:
                bag_size = 0
            else:
                bag_size = random.randint(1, max_indices_per_bag - 1)
            indices += [1 if allpad else random.randint(0, num_words - 1) for _ in range(bag_size)]
            cur_offset += bag_size

        # embedding_bag requires first entry of offsets to be 0
        assert offsets[0] == 0
        indices = torch.tensor(indices)
        if include_last_offset:
            offsets.append(indices.size(0))
        offsets = torch.tensor(offsets)
        return indices, offsets

    # Convert a 1-D indices-offsets representation into 2-D. Fill any empty indices with padding_idx
    def gen_2D_indices_from_1D(indices_1D, offsets, include_last_offset, padding_idx):
        assert offsets[0] == 0
        if include_last_offset:
            offsets = offsets[:-1]
        flat, offsets = indices_1D.tolist(), offsets.tolist()  # (lists: the same loop, faster)
        indices_2D = torch.empty(num_bags, max_indices_per_bag, dtype=torch.long)
        for bag in range(num_bags):
            # Determine the start and end position of the bag within indices_1D
            start = offsets[bag]
            end = len(flat) if bag + 1 == num_bags else offsets[bag + 1]
            end = min(len(flat), end)

            # Pull out the bag's indices from indices_1D, and fill any remaining space with padding indices
            indices_in_bag = []
            for item_pos in range(0, max_indices_per_bag):
                if (start + item_pos) < end:
                    indices_in_bag.append(flat[start + item_pos])
                else:
                    indices_in_bag.append(padding_idx)
            indices_2D[bag] = torch.tensor(indices_in_bag)
        return indices_2D

    test_cases = itertools.product(["max", "mean", "sum"], [sparse], [False, True], [False, True])

    for mode, sparse, include_last_offset, allpad in test_cases:
        # Max sparse and bfloat16 are not supported
        if mode == "max":
            if sparse or (dtype == torch.bfloat16):
                continue
        indices_1D, offsets = gen_1D_indices_offsets(include_last_offset, allpad)
        for padding_idx_1D in list(set(indices_1D.tolist())) + [None]:
            msg = (f"mode: '{mode}', sparse: {sparse}, include_last_offset: {include_last_offset}, "
                   f"padding_idx_1D: {padding_idx_1D}")

            # If 1D input does not use a padding index, we still need one for the 2D input,
            # so we can add one dummy word to the weights to act as the padded word
            padding_idx_2D = padding_idx_1D if padding_idx_1D is not None else num_words
            num_words_with_padding = num_words if padding_idx_1D is not None else num_words + 1

            indices_2D = gen_2D_indices_from_1D(indices_1D, offsets, include_last_offset, padding_idx_2D)

            weights = torch.randn(num_words_with_padding, num_features, dtype=dtype, requires_grad=True)
            weights_check = weights.detach().clone().requires_grad_(True)
            weights_torch = weights.detach().clone().requires_grad_(True)

            bag = el.embedding_bag(indices_1D, weights, offsets, padding_idx=padding_idx_1D, mode=mode,
                                   include_last_offset=include_last_offset, **sparse_kw(sparse))
            bag_check = el.embedding_bag(indices_2D, weights_check, padding_idx=padding_idx_2D, mode=mode,
                                         **sparse_kw(sparse))
            bag_torch = F.embedding_bag(indices_1D, weights_torch, offsets, padding_idx=padding_idx_1D, mode=mode,
                                        sparse=sparse, include_last_offset=include_last_offset)
            close(bag, bag_check, msg=msg)
            close(bag, bag_torch, msg=msg)

            bag.sum().backward()
            bag_check.sum().backward()
            bag_torch.sum().backward()
            close(weights.grad, weights_check.grad, msg=msg)
            close(weights.grad, weights_torch.grad, msg=msg)


@pytest.mark.parametrize("cases,sparse", each_case_dense_and_sparse([torch.float32, torch.float64]))
def test_ported_embedding_bag_2D_padding_idx(cases, sparse):
    # test_embedding_bag_2D_padding_idx: see _ported_embedding_bag_2D_padding_idx
    for dtype in cases:
        _ported_embedding_bag_2D_padding_idx(dtype, sparse)


def _ported_embedding_bag_2D_padding_idx(dtype, sparse):
    # test_embedding_bag_2D_padding_idx (CPU: float32, float64): 2-D bags against a Python
    # embedding_bag built on el.lookup (the original: on F.embedding), and against F.embedding_bag.
    def embedding_bag_check(indices, weights, mode, sparse, padding_idx):
        assert padding_idx is not None
        embedding = el.lookup(indices, weights, padding_idx=padding_idx, **sparse_kw(sparse))

        reduction_dim = indices.dim() - 1

        if mode == "sum" or mode == "mean":
            # We must avoid including elements at padding_idx in the sum/mean, so multiply those
            # elements by 0, and multiply all other elements by 1
            per_sample_weights = indices.ne(padding_idx).to(dtype).unsqueeze(-1)
            res = embedding.mul(per_sample_weights).sum(dim=reduction_dim)

            if mode == "mean":
                weights_sum = per_sample_weights.sum(dim=reduction_dim)
                res = res.div(weights_sum)

        elif mode == "max":
            # We must avoid allowing elements at padding_idx to be chosen as the max, so set those
            # elements to negative infinity
            res = embedding.masked_fill(indices.unsqueeze(-1) == padding_idx, -float("inf")).amax(dim=reduction_dim)

        else:
            raise RuntimeError(f"mode '{mode}' is not available")

        # If a row is all padding, set its corresponding result row to 0. This is needed because the
        # above mean and max mode implementations set these elements to nan and -inf, respectively
        if mode in ["mean", "max"]:
            res = res.masked_fill(indices.eq(padding_idx).all(dim=-1).unsqueeze(-1), 0)

        return res

    num_features = 3
    num_words = 10
    indices_dim1 = 10

    for mode, sparse, allpad, indices_dim0 in itertools.product(["max", "mean", "sum"], [sparse], [False, True],
                                                                [1, 10]):
        # Max sparse and bfloat16 are not supported
        if mode == "max":
            if sparse or (dtype == torch.bfloat16):
                continue

        if allpad:
            indices = torch.empty(indices_dim0, indices_dim1, dtype=torch.long).fill_(1)
        else:
            indices = torch.randint(0, num_words, (indices_dim0, indices_dim1))

            if indices_dim0 > 1:
                # Fill one row with duplicate index so we can test with a fully padded row
                duplicate_row = random.randint(0, indices_dim0 - 1)
                indices[duplicate_row] = indices[duplicate_row][0]

        for padding_idx in list(set(indices.flatten(0, -1).tolist())):
            weights = torch.randn(num_words, num_features, dtype=dtype, requires_grad=True)
            weights_check = weights.detach().clone().requires_grad_(True)
            weights_torch = weights.detach().clone().requires_grad_(True)

            msg = (f"mode: '{mode}', sparse: {sparse}, padding_idx: {padding_idx}, "
                   f"allpad: {allpad}, indices.size(): {indices.size()}")

            # Check forward with a Python implementation of padding_idx embedding_bag
            bag_check = embedding_bag_check(indices, weights_check, mode, sparse, padding_idx)
            bag = el.embedding_bag(indices, weights, padding_idx=padding_idx, mode=mode, **sparse_kw(sparse))
            bag_torch = F.embedding_bag(indices, weights_torch, padding_idx=padding_idx, mode=mode, sparse=sparse)

            close(bag, bag_check, msg=msg)
            close(bag, bag_torch, msg=msg)

            bag_check.sum().backward()
            bag.sum().backward()
            bag_torch.sum().backward()
            close(weights.grad, weights_check.grad, msg=msg)
            close(weights.grad, weights_torch.grad, msg=msg)


@pytest.mark.parametrize("cases,sparse", each_case_dense_and_sparse(INDEX_DTYPE_PAIRS))
def test_ported_embedding_bag_empty_input(cases, sparse):
    # test_embedding_bag_empty_input: see _ported_embedding_bag_empty_input
    for dtypes in cases:
        _ported_embedding_bag_empty_input(dtypes, sparse)


def _ported_embedding_bag_empty_input(dtypes, sparse):
    # test_embedding_bag_empty_input (the original loops over sparse in (True, False)). The original
    # passes input= and offsets= by keyword; embedlib's first argument is named `indices` (see
    # test_difference_indices_keyword), so it is passed by position here.
    m = 4
    n = 3
    x = torch.tensor([], dtype=dtypes[0])
    Embed = el.EmbeddingBag(m, n, **sparse_kw(sparse))

    output = Embed(x, offsets=torch.tensor([0], dtype=dtypes[1]))
    assert torch.equal(output, torch.zeros_like(output))
    assert output.shape == (1, n)

    output = Embed(x, offsets=torch.tensor([0, 0], dtype=dtypes[1]))
    assert torch.equal(output, torch.zeros_like(output))
    assert output.shape == (2, n)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("dtypes", list(itertools.product((torch.float, torch.double), INDEX_DTYPES)),
                         ids=lambda d: dtype_id(d))
def test_ported_embedding_bag_out_of_bounds_idx(dtypes, padding_idx, mode):
    # test_embedding_bag_out_of_bounds_idx (the original overrides its padding_idx parameter with 0;
    # here both values run). Deliberate difference: PyTorch RuntimeError, embedlib an IndexError that
    # names the value (on every device; PyTorch skips the check on CUDA "for perf.").
    w_dtype, idx_dtype = dtypes
    # negative out-of-bound
    idx1 = torch.tensor([[-1, 1]], dtype=idx_dtype)
    # positive out-of-bound
    idx2 = torch.tensor([[11, 8]], dtype=idx_dtype)
    weight = torch.randn(10, 2, dtype=w_dtype)
    if mode == "sum":
        # Only `sum` supports per_sample_weight
        per_sample_weights = (None, torch.randn_like(idx1, dtype=w_dtype))
    else:
        per_sample_weights = (None,)

    for p_s_weights, idx in itertools.product(per_sample_weights, (idx1, idx2)):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        differs(lambda: F.embedding_bag(idx, weight, per_sample_weights=p_s_weights, padding_idx=padding_idx,
                                        mode=mode), RuntimeError,
                lambda: el.embedding_bag(idx, weight, per_sample_weights=p_s_weights, padding_idx=padding_idx,
                                         mode=mode), IndexError,
                match=f"index {bad} is out of range for num_embeddings=10")


def test_ported_embedding_bag_dimension_errors():
    # test_embedding_bag_dimension_errors: the F.embedding_bag call (torch.embedding_bag,
    # torch._embedding_bag and torch._embedding_bag_forward_only are ATen internals: not ported).
    # PyTorch accepts ValueError or RuntimeError; both libraries raise ValueError for all three.
    weight = torch.full((2, 6), 0, dtype=torch.float64)
    indices = torch.full((2, 0, 0, 6, 6), 2, dtype=torch.int64)
    offsets = torch.full((2, 0, 0, 6, 6), 0, dtype=torch.int64)
    with pytest.raises(ValueError, match="input has to be 1D or 2D Tensor"):
        F.embedding_bag(indices, weight, offsets)
    with pytest.raises(ValueError, match="indices of a bag must be 1-D .* or 2-D"):
        el.embedding_bag(indices, weight, offsets)

    weight = torch.full((2, 2), 0, dtype=torch.float64)
    indices = torch.full((2,), 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="offsets has to be a 1D Tensor"):
        F.embedding_bag(indices, weight, offsets)
    with pytest.raises(ValueError, match="offsets must be 1-D"):
        el.embedding_bag(indices, weight, offsets)

    weight = torch.full((2, 2, 2), 0, dtype=torch.float64)
    indices = torch.full((2,), 2, dtype=torch.int64)
    offsets = torch.full((2,), 0, dtype=torch.int64)
    with pytest.raises(ValueError, match="weight has to be a 2D Tensor"):
        F.embedding_bag(indices, weight, offsets)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        el.embedding_bag(indices, weight, offsets)


@pytest.mark.parametrize("failure", ["dtype", "size_1d", "size_2d",
                                     "mode_max", "mode_mean"])
def test_ported_EmbeddingBag_per_sample_weights_failures(failure):
    # test_EmbeddingBag_per_sample_weights_failures, one failure per case, each for every index dtype pair
    for dtypes in INDEX_DTYPE_PAIRS:
        _ported_EmbeddingBag_per_sample_weights_failures(dtypes, failure)


def _ported_EmbeddingBag_per_sample_weights_failures(dtypes, failure):
    es = el.EmbeddingBag(5, 2, mode="sum").to(dtype=torch.float)
    ref = nn.EmbeddingBag(5, 2, mode="sum").to(dtype=torch.float)
    if failure == "dtype":
        # Failure 1: mismatched embeddings / per_sample_weights dtype (PyTorch: only on CPU, RuntimeError)
        input = torch.tensor([3, 1, 1, 1, 4, 0], dtype=dtypes[0])
        offsets = torch.tensor([0, 0, 3, 3, 6], dtype=dtypes[1])
        per_sample_weights = torch.randn_like(input, dtype=torch.double)
        with pytest.raises(RuntimeError, match="have the same type as"):
            ref(input, offsets, per_sample_weights)
        with pytest.raises((TypeError, ValueError), match="per_sample_weights"):
            es(input, offsets, per_sample_weights)
    elif failure == "size_1d":
        # Failure 2.1: input/per_sample_weights have different sizes (1d input)
        input = torch.tensor([3, 1, 1, 1, 4, 0], dtype=dtypes[0])
        offsets = torch.tensor([0, 0, 3, 3, 6], dtype=dtypes[1])
        per_sample_weights = torch.randn(5, dtype=torch.float)
        with pytest.raises(ValueError, match="same shape as the input"):
            ref(input, offsets, per_sample_weights)
        with pytest.raises(ValueError, match=r"per_sample_weights must have shape \(6,\)"):
            es(input, offsets, per_sample_weights)
    elif failure == "size_2d":
        # Failure 2.2: input/per_sample_weights have different sizes (2d input)
        input = torch.randint(5, (7, 3), dtype=dtypes[0])
        offsets = None
        per_sample_weights = torch.randn(7 * 3, dtype=torch.float)
        with pytest.raises(ValueError, match="same shape as the input"):
            ref(input, offsets, per_sample_weights)
        with pytest.raises(ValueError, match=r"per_sample_weights must have shape \(7, 3\)"):
            es(input, offsets, per_sample_weights)
    else:
        # Failure 3: Unsupported per_sample_weights and mode=('max', 'mean'). Deliberate difference:
        # PyTorch NotImplementedError, embedlib ValueError.
        unsupported_mode = failure.removeprefix("mode_")
        es = el.EmbeddingBag(5, 2, mode=unsupported_mode).to(dtype=torch.float)
        ref = nn.EmbeddingBag(5, 2, mode=unsupported_mode).to(dtype=torch.float)
        input = torch.randint(5, (7, 3), dtype=dtypes[0])
        offsets = None
        per_sample_weights = torch.randn(7, 3, dtype=torch.float)
        differs(lambda: ref(input, offsets, per_sample_weights), NotImplementedError,
                lambda: es(input, offsets, per_sample_weights), ValueError,
                match="per_sample_weights is only supported with mode='sum'")


def _ebag_with_arange_weight(dtype, **options):
    """``nn.EmbeddingBag(5, 2, ...)`` with weight 1..10, in embedlib and in PyTorch."""
    es = el.EmbeddingBag(5, 2, **options).to(dtype=dtype)
    es.weight.data.copy_(torch.arange(1, 11).view_as(es.weight).to(dtype))
    ref = nn.EmbeddingBag(5, 2, **options).to(dtype=dtype)
    ref.weight.data.copy_(es.weight)
    return es, ref


EBAG_DTYPES = list(itertools.product(INDEX_DTYPES, INDEX_DTYPES, FLOAT_DTYPES))


@pytest.mark.parametrize("dtypes", EBAG_DTYPES, ids=lambda d: dtype_id(d))
def test_ported_EmbeddingBag_empty_per_sample_weights_and_offsets(dtypes):
    # test_EmbeddingBag_empty_per_sample_weights_and_offsets (CPU: half and bfloat16 too)
    # Test empty input and per sample weight, and backward pass. There was a CUDA invalid configuration
    # bug (more context in PyTorch issue 46572)
    def test_per_sample_weights(mode, trainable_scale):
        es, ref = _ebag_with_arange_weight(dtypes[2], mode=mode)
        input = torch.tensor([], dtype=dtypes[0])
        offsets = torch.tensor([0, 0, 0, 0, 0], dtype=dtypes[1])
        per_sample_weights = torch.randn_like(input, dtype=dtypes[2]).requires_grad_(trainable_scale)
        ref_per_sample_weights = per_sample_weights.detach().requires_grad_(trainable_scale)
        reference_weights = es.weight.detach().requires_grad_()

        expected = embedding_bag_reference_impl(input, reference_weights, offsets, mode, ref_per_sample_weights)
        result = es(input, offsets, per_sample_weights)
        close(result, expected, atol=PREC[dtypes[2]], rtol=0)
        close(result, ref(input, offsets, per_sample_weights.detach()))

        grad = torch.randn_like(expected)
        result.backward(grad)
        # the reference impl doesn't have grad fn for empty input; but the grad should simply be a zero tensor
        ref_weights_grad = torch.zeros_like(es.weight)
        close(es.weight.grad, ref_weights_grad, atol=PREC[dtypes[2]], rtol=0)
        if trainable_scale:
            ref_per_sample_weights_grad = torch.empty_like(per_sample_weights)
            close(per_sample_weights.grad, ref_per_sample_weights_grad, atol=PREC[dtypes[2]], rtol=0)

    modes = ("sum",)
    trainable_scale = (True, False)
    for mode, trainable in itertools.product(modes, trainable_scale):
        test_per_sample_weights(mode, trainable)


@pytest.mark.parametrize("dtypes", EBAG_DTYPES, ids=lambda d: dtype_id(d))
def test_ported_EmbeddingBag_per_sample_weights_and_offsets(dtypes):
    # test_EmbeddingBag_per_sample_weights_and_offsets (CPU: half and bfloat16 too), plus PyTorch's layer
    def test_per_sample_weights(mode, trainable_scale):
        es, ref = _ebag_with_arange_weight(dtypes[2], mode=mode)
        input = torch.tensor([3, 1, 1, 1, 4, 0], dtype=dtypes[0])
        offsets = torch.tensor([0, 0, 3, 3, 6], dtype=dtypes[1])
        per_sample_weights = torch.randn_like(input, dtype=dtypes[2]).requires_grad_(trainable_scale)
        ref_per_sample_weights = per_sample_weights.detach().requires_grad_(trainable_scale)
        torch_per_sample_weights = per_sample_weights.detach().clone().requires_grad_(trainable_scale)
        reference_weights = es.weight.detach().requires_grad_()

        expected = embedding_bag_reference_impl(input, reference_weights, offsets, mode, ref_per_sample_weights)
        result = es(input, offsets, per_sample_weights)
        close(result, expected, atol=PREC[dtypes[2]], rtol=0)
        torch_result = ref(input, offsets, torch_per_sample_weights)
        close(result, torch_result)

        grad = torch.randn_like(expected).to(dtype=dtypes[2])
        result.backward(grad)
        expected.backward(grad)
        torch_result.backward(grad)
        close(es.weight.grad, reference_weights.grad, atol=PREC[dtypes[2]], rtol=0)
        close(es.weight.grad, ref.weight.grad)
        if trainable_scale:
            close(per_sample_weights.grad, ref_per_sample_weights.grad, atol=PREC[dtypes[2]], rtol=0)
            close(per_sample_weights.grad, torch_per_sample_weights.grad)

    modes = ("sum",)
    trainable_scale = (True, False)
    for mode, trainable in itertools.product(modes, trainable_scale):
        test_per_sample_weights(mode, trainable)


@pytest.mark.parametrize("dtypes", EBAG_DTYPES, ids=lambda d: dtype_id(d))
def test_ported_EmbeddingBag_per_sample_weights_and_new_offsets(dtypes):
    # test_EmbeddingBag_per_sample_weights_and_new_offsets (CPU: half and bfloat16 too), plus PyTorch's layer
    def test_per_sample_weights_new_offsets(mode, trainable_scale, include_last_offset, has_weight=True):
        es, ref = _ebag_with_arange_weight(dtypes[2], mode=mode, include_last_offset=include_last_offset)
        input = torch.tensor([3, 1, 1, 1, 4, 0], dtype=dtypes[0])
        offsets = torch.tensor([0, 0, 3, 3, 6], dtype=dtypes[1])

        if include_last_offset:
            offsets = torch.cat((offsets, torch.tensor([input.size(0)], dtype=dtypes[1])), 0)

        if has_weight:
            per_sample_weights = torch.randn_like(input, dtype=dtypes[2]).requires_grad_(trainable_scale)
            ref_per_sample_weights = per_sample_weights.detach().requires_grad_(trainable_scale)
            torch_per_sample_weights = per_sample_weights.detach().clone().requires_grad_(trainable_scale)
        else:
            per_sample_weights = None
            ref_per_sample_weights = None
            torch_per_sample_weights = None

        reference_weights = es.weight.detach().requires_grad_()

        expected = embedding_bag_reference_impl(input, reference_weights, offsets, mode, ref_per_sample_weights,
                                                include_last_offset)
        result = es(input, offsets, per_sample_weights)
        close(result, expected, atol=PREC[dtypes[2]], rtol=0)
        torch_result = ref(input, offsets, torch_per_sample_weights)
        close(result, torch_result)

        grad = torch.randn_like(expected)
        result.backward(grad)
        expected.backward(grad)
        torch_result.backward(grad)
        close(es.weight.grad, reference_weights.grad, atol=PREC[dtypes[2]], rtol=0)
        close(es.weight.grad, ref.weight.grad)
        if has_weight and trainable_scale:
            close(per_sample_weights.grad, ref_per_sample_weights.grad, atol=PREC[dtypes[2]], rtol=0)
            close(per_sample_weights.grad, torch_per_sample_weights.grad)

    trainable_scale = (True, False)
    include_last_offset_list = (True, False)
    modes = (("sum", False), ("sum", True), ("max", False), ("mean", False))
    for (mode, has_weight), trainable, include_last_offset in itertools.product(modes, trainable_scale,
                                                                                 include_last_offset_list):
        test_per_sample_weights_new_offsets(mode, trainable, include_last_offset, has_weight)


def _check_EmbeddingBag_vs_Embedding(N, D, B, L, max_norm=None, mode="mean", wdtype=torch.float, dtype=torch.long,
                                     test_per_sample_weights=False, trainable_per_sample_weights=False, sparse=False,
                                     test_backward=True, backward_prec=None):
    """``_test_EmbeddingBag_vs_Embedding``: embedlib's bag layer against embedlib's Embedding plus a
    reduction (the original's check), and against nn.EmbeddingBag on the same weight."""
    es = el.EmbeddingBag(N, D, mode=mode, max_norm=max_norm, **sparse_kw(sparse)).to("cpu", wdtype)
    e = el.Embedding(N, D, max_norm=max_norm).to("cpu", wdtype)
    e.weight.data.copy_(es.weight)
    tes = nn.EmbeddingBag(N, D, mode=mode, sparse=sparse, max_norm=max_norm).to("cpu", wdtype)
    tes.weight.data.copy_(es.weight)
    input = torch.randint(N, (B, L), dtype=dtype)
    offsets = torch.arange(0, B, dtype=dtype).mul_(L)
    grad_output = torch.rand(B, D, dtype=wdtype)

    if test_per_sample_weights:
        # To prevent large gradients, weights should sum to 1 for each bag
        per_sample_weights = torch.randn(B, L, dtype=wdtype).softmax(dim=-1)
        per_sample_weights_reference = per_sample_weights.clone().requires_grad_(trainable_per_sample_weights)
        per_sample_weights_torch = per_sample_weights.clone().requires_grad_(trainable_per_sample_weights)
        per_sample_weights.requires_grad_(trainable_per_sample_weights)
        output = es(input.view(-1), offsets, per_sample_weights.view(-1))
        torch_output = tes(input.view(-1), offsets, per_sample_weights_torch.view(-1))
    else:
        output = es(input.view(-1), offsets)
        torch_output = tes(input.view(-1), offsets)
        per_sample_weights = None
        per_sample_weights_reference = None

    if mode == "sum":
        if test_per_sample_weights:
            ref_output = (e(input) * per_sample_weights_reference.unsqueeze(-1)).sum(1)
        else:
            ref_output = e(input).sum(1)
    elif mode == "mean":
        assert not test_per_sample_weights
        ref_output = e(input).mean(1)
    elif mode == "max":
        assert not test_per_sample_weights
        ref_output = e(input).max(1)[0]

    # (PyTorch's rtol=0 fails on other random tables: bfloat16 sums near 20 are 0.125 apart, more than
    # its atol, and float32 sums near 40 added in another order differ by 1.5e-5. A relative tolerance
    # too, as for PyTorch's own output on the next line.)
    close(output, ref_output, atol=PREC[wdtype], rtol=TOL[wdtype]["rtol"])
    close(output, torch_output, atol=PREC[wdtype], rtol=TOL[wdtype]["rtol"])
    close(es.weight, tes.weight)  # the same rows renormalised (max_norm)

    if not test_backward:
        return

    output.backward(grad_output)
    ref_output.backward(grad_output)
    torch_output.backward(grad_output)
    es_weight_grad = es.weight.grad
    if sparse:
        es_weight_grad = es.weight.grad.to_dense()

    # We have more floating point error here because we are dealing with larger numbers
    if backward_prec is None:
        needed_prec = PREC[wdtype] * 5
        rtol = 0.02 if wdtype == torch.half else 0
    else:
        needed_prec = backward_prec
        rtol = 0

    close(es_weight_grad, e.weight.grad, atol=needed_prec, rtol=rtol)
    close(es_weight_grad, tes.weight.grad, atol=needed_prec, rtol=max(rtol, TOL[wdtype]["rtol"]))

    if test_per_sample_weights and trainable_per_sample_weights:
        close(per_sample_weights.grad, per_sample_weights_reference.grad, atol=PREC[wdtype], rtol=0)
        close(per_sample_weights.grad, per_sample_weights_torch.grad, atol=PREC[wdtype], rtol=0)


@pytest.mark.parametrize("cases,sparse",
                         each_case_dense_and_sparse(list(itertools.product(INDEX_DTYPES, (torch.float, torch.double)))))
def test_ported_EmbeddingBag_per_sample_weights_and_no_offsets(cases, sparse):
    # test_EmbeddingBag_per_sample_weights_and_no_offsets: see _ported_EmbeddingBag_per_sample_weights_and_no_offsets
    for dtypes in cases:
        _ported_EmbeddingBag_per_sample_weights_and_no_offsets(dtypes, sparse)


def _ported_EmbeddingBag_per_sample_weights_and_no_offsets(dtypes, sparse):
    # test_EmbeddingBag_per_sample_weights_and_no_offsets (the original loops over sparsity in (True, False))
    def run_tests(mode, sparse, trainable_per_sample_weights):
        kwargs = dict(test_per_sample_weights=True, mode=mode, wdtype=dtypes[1], dtype=dtypes[0], sparse=sparse,
                      trainable_per_sample_weights=trainable_per_sample_weights)

        # Simple case
        _check_EmbeddingBag_vs_Embedding(2, 3, 5, 7, **kwargs)

        # B * L > 1000
        _check_EmbeddingBag_vs_Embedding(2, 5, 53, 23, **kwargs)

        # Large num_embedding
        _check_EmbeddingBag_vs_Embedding(101, 5, 3, 7, **kwargs)

        # Large embedding_dim
        _check_EmbeddingBag_vs_Embedding(2, 101, 3, 7, **kwargs)

    modes = ("sum",)
    sparsity = (sparse,)
    trainable_scale = (True, False)
    for mode, sparse, trainable_per_sample_weights in itertools.product(modes, sparsity, trainable_scale):
        run_tests(mode, sparse, trainable_per_sample_weights)


def _check_EmbeddingBag(mode, sparse, wdtype=torch.double, dtype=torch.long, odtype=torch.long,
                        test_backward=True):
    """``_test_EmbeddingBag``: a known example, its 2-D form, all-empty bags, the bag against the lookup
    plus a reduction, and illegal input."""
    # check a known test example
    es = el.EmbeddingBag(5, 2, mode=mode, **sparse_kw(sparse)).to("cpu", wdtype)
    es.weight.data.copy_(torch.arange(1, 11).view_as(es.weight).to(wdtype))
    input = torch.tensor([3, 1, 1, 1, 4, 0], dtype=dtype)
    offsets = torch.tensor([0, 0, 3, 3, 6], dtype=odtype)

    grad_output = torch.tensor([1, 2, 3, 4], dtype=wdtype).view(2, 2)
    grad_output_with_empty = torch.tensor([99, 99, 1, 2, 99, 99, 3, 4, 99, 99], dtype=wdtype).view(5, 2)

    if mode == "sum" or mode == "mean":
        denominator = 1 if mode == "sum" else 3
        expected_output = torch.tensor([[13, 16], [13, 16]], dtype=wdtype) / denominator
        expected_output_with_empty = torch.tensor([[0, 0], [13, 16], [0, 0], [13, 16], [0, 0]],
                                                  dtype=wdtype) / denominator
        expected_grad_weight = torch.tensor([[3, 4], [5, 8], [0, 0], [1, 2], [3, 4]], dtype=wdtype) / denominator
    elif mode == "max":
        expected_output = torch.tensor([[7, 8], [9, 10]], dtype=wdtype)
        expected_output_with_empty = torch.tensor([[0, 0], [7, 8], [0, 0], [9, 10], [0, 0]], dtype=wdtype)
        expected_grad_weight = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 2], [3, 4]], dtype=wdtype)
    output = es(input, offsets)
    output.backward(grad_output_with_empty)

    es_weight_grad = es.weight.grad
    if sparse:
        es_weight_grad = es.weight.grad.to_dense()
    close(output, expected_output_with_empty)
    close(es_weight_grad, expected_grad_weight, atol=PREC[wdtype], rtol=0)

    # check same example except as 2D (2 x 3)
    input = input.view(2, -1)
    es.zero_grad()
    output = es(input)
    output.backward(grad_output)

    es_weight_grad = es.weight.grad
    if sparse:
        es_weight_grad = es.weight.grad.to_dense()
    close(output, expected_output)
    close(es_weight_grad, expected_grad_weight, atol=PREC[wdtype], rtol=0)

    # test all empty bags
    es.zero_grad()
    inputs = torch.tensor([], dtype=dtype)
    offsets = torch.tensor([0, 0, 0, 0], dtype=odtype)
    es(inputs, offsets).sum().backward()
    dense_grad = es.weight.grad
    if dense_grad.is_sparse:
        dense_grad = dense_grad.to_dense()
    assert torch.equal(dense_grad, torch.zeros_like(es.weight))

    # now compare EmbeddingBag vs Embedding + Sum/Mean, for constant bag length
    N, D, B, L = random.randint(1, 100), random.randint(1, 100), random.randint(1, 50), random.randint(1, 50)
    kwargs = dict(mode=mode, sparse=sparse, wdtype=wdtype, dtype=dtype, test_backward=test_backward)
    _check_EmbeddingBag_vs_Embedding(N, D, B, L, **kwargs)
    for max_norm in (None, 3):
        for p in itertools.product([1, 2], repeat=4):
            _check_EmbeddingBag_vs_Embedding(*p, max_norm=max_norm, **kwargs)

    # check that giving illegal input combos raises error
    es = el.EmbeddingBag(10, 20, mode=mode, **sparse_kw(sparse))
    ref = nn.EmbeddingBag(10, 20, mode=mode, sparse=sparse)
    input = torch.ones(3, 4, dtype=dtype)
    offset = torch.arange(0, 3, dtype=odtype)
    with pytest.raises(ValueError):
        es(input, offset)
    with pytest.raises(ValueError):
        es(input.view(-1))
    offset[0] = 1
    # Deliberate difference (both): PyTorch RuntimeError (on the CPU only), embedlib ValueError (everywhere).
    differs(lambda: ref(input.view(-1), offset), RuntimeError,
            lambda: es(input.view(-1), offset), ValueError, match="offsets must start at 0")
    offset[0] = 0
    offset[-1] = 100
    differs(lambda: ref(input.view(-1), offset), RuntimeError,
            lambda: es(input.view(-1), offset), ValueError, match="offsets run past the indices")


@pytest.mark.parametrize("cases,sparse", each_case_dense_and_sparse(EBAG_DTYPES))
def test_ported_embedding_bag_device(cases, sparse):
    # test_embedding_bag_device: see _ported_embedding_bag_device
    for dtypes in cases:
        _ported_embedding_bag_device(dtypes, sparse)


def _ported_embedding_bag_device(dtypes, sparse):
    # test_embedding_bag_device (CPU: half and bfloat16 too): "dense" is its sum, mean and max calls,
    # "sparse" its sum and mean calls with sparse=True.
    with default_dtype(torch.double):
        kwargs = dict(wdtype=dtypes[2], dtype=dtypes[0], odtype=dtypes[1])
        if not sparse:
            _check_EmbeddingBag("sum", False, **kwargs)
            _check_EmbeddingBag("mean", False, **kwargs)
            _check_EmbeddingBag("max", False, **kwargs)
            return
        # TODO (PyTorch's): figure out why precision on sparse embeddings isn't the same as for dense.
        test_backward = dtypes[2] is not torch.float and dtypes[2] is not torch.float16
        _check_EmbeddingBag("sum", True, test_backward=test_backward, **kwargs)
        _check_EmbeddingBag("mean", True, test_backward=test_backward, **kwargs)


@pytest.mark.parametrize("dtypes", EBAG_DTYPES, ids=lambda d: dtype_id(d))
def test_ported_embedding_bag_non_contiguous_weight(dtypes):
    # test_embedding_bag_non_contiguous_weight. The original compares after its loop (only "max");
    # here every mode, and against F.embedding_bag. Keywords as in the original, except embedlib's
    # name for the first argument, `indices` (PyTorch: `input`; see test_difference_indices_keyword).
    weight_tensor = torch.randn(3, 4, dtype=dtypes[2])

    weight_tensor_non_contig = weight_tensor[:, :3]  # This is non-contiguous strided.
    weight_tensor_contig = weight_tensor_non_contig.clone().contiguous()  # Contig-strided.

    index = torch.tensor([0, 1, 2], dtype=dtypes[0])
    offsets = torch.tensor([0, 2], dtype=dtypes[1])
    for mode in ["sum", "mean", "max"]:
        output_non_contig = el.embedding_bag(indices=index, weight=weight_tensor_non_contig, offsets=offsets,
                                             mode=mode)
        output_contig = el.embedding_bag(indices=index, weight=weight_tensor_contig, offsets=offsets, mode=mode)
        assert torch.equal(output_non_contig, output_contig)
        close(output_non_contig, F.embedding_bag(input=index, weight=weight_tensor_non_contig, offsets=offsets,
                                                 mode=mode))


def test_ported_embedding_bag_bfloat16():
    # test_embedding_bag_bfloat16, every index dtype pair: sparse=True only (dense bfloat16 runs in
    # test_ported_embedding_bag_device)
    for dtypes in INDEX_DTYPE_PAIRS:
        with default_dtype(torch.double):
            _check_EmbeddingBag("sum", True, wdtype=torch.bfloat16, dtype=dtypes[0], odtype=dtypes[1],
                                test_backward=True)
            _check_EmbeddingBag("mean", True, wdtype=torch.bfloat16, dtype=dtypes[0], odtype=dtypes[1],
                                test_backward=True)


def test_ported_embedding_bag_half():
    # test_embedding_bag_half, every index dtype pair: sparse=True only (dense float16 runs in
    # test_ported_embedding_bag_device)
    for dtypes in INDEX_DTYPE_PAIRS:
        _check_EmbeddingBag("sum", True, wdtype=torch.float16, dtype=dtypes[0], odtype=dtypes[1],
                            test_backward=True)


@pytest.mark.parametrize("bag_use_grad,per_sample_weights_use_grad",
                         [(True, True), (True, False), (False, True), (False, False)])
def test_ported_embedding_bag_per_sample_weights_grad(bag_use_grad, per_sample_weights_use_grad):
    # test_embedding_bag_per_sample_weights_grad (the original only runs it), plus PyTorch's layer:
    # output and the gradients that exist.
    bag = el.EmbeddingBag(256, 256, mode="sum")
    bag.requires_grad_(bag_use_grad)
    x = torch.arange(1, 5).expand(3, -1)
    w = torch.rand(3, 4, requires_grad=per_sample_weights_use_grad)
    out = bag(x, per_sample_weights=F.softmax(w, dim=-1))

    ref = nn.EmbeddingBag(256, 256, mode="sum")
    ref.weight.data.copy_(bag.weight)
    ref.requires_grad_(bag_use_grad)
    w_ref = w.detach().clone().requires_grad_(per_sample_weights_use_grad)
    out_ref = ref(x, per_sample_weights=F.softmax(w_ref, dim=-1))
    close(out, out_ref)
    assert out.requires_grad == out_ref.requires_grad
    if out.requires_grad:
        g = torch.randn_like(out)
        out.backward(g)
        out_ref.backward(g)
        for mine, theirs in ((bag.weight.grad, ref.weight.grad), (w.grad, w_ref.grad)):
            assert (mine is None) == (theirs is None)
            if mine is not None:
                close(mine, theirs)


# ==================================================================================================
# OpInfo: nn.functional.embedding and nn.functional.embedding_bag (tests/pytorch_cases.py)
# ==================================================================================================
def _opinfo_params(samples, apis):
    """``(indices of samples, api)`` parameters: each sample alone, through each api."""
    return [pytest.param([i], api, id=f"{s.name}-{api}") for i, s in enumerate(samples) for api in apis]


LAYER_OPTIONS = ("padding_idx", "max_norm", "norm_type", "mode", "include_last_offset") + GRADIENT_OPTIONS


def _call_el(op, api, weight, indices, kwargs):
    """embedlib's function, or its layer built on a copy of ``weight``; returns (output, table) where
    the table is what receives the gradient and any in-place renormalisation."""
    if api == "function":
        fn = el.lookup if op == "embedding" else el.embedding_bag
        return fn(indices, weight, **kwargs), weight
    options = {k: v for k, v in kwargs.items() if k in LAYER_OPTIONS}
    forward = {k: v for k, v in kwargs.items() if k not in LAYER_OPTIONS}
    cls = el.Embedding if op == "embedding" else el.EmbeddingBag
    layer = cls.from_weight(weight.detach(), **options)
    if op == "embedding":
        return layer(indices, **forward), layer.weight
    return layer(indices, forward.get("offsets"), forward.get("per_sample_weights")), layer.weight


def _clone_kwargs(kwargs):
    """Fresh copies of the tensor options; per-sample weights that will receive a gradient."""
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().clone()
            if v.dtype.is_floating_point:
                v.requires_grad_()
        out[k] = v
    return out


LOW_PRECISION = (torch.float16, torch.bfloat16)


def _magnitudes(op, sample, grad):
    """Float64 sums of the terms' magnitudes behind every output, weight-gradient and per-sample-weight
    gradient element (the op on |weight|, |per_sample_weights|, |grad|), and the most terms in one sum.

    float16 and bfloat16 results may round differently from PyTorch's (PyTorch's CPU kernels add in
    float32, embedlib may add in the table's type): a difference within (terms + 1) * eps * magnitude
    is rounding (the usual bound for a sum), anything larger, such as a wrong or a missing row, is not."""
    torch_fn = F.embedding if op == "embedding" else F.embedding_bag
    kwargs = {k: v for k, v in sample.kwargs.items() if k not in ("max_norm", "norm_type", "sparse",
                                                                  "scale_grad_by_freq")}
    if kwargs.get("mode") == "max":  # every entry, not only the winners (|w| may have other winners)
        kwargs["mode"] = "sum"
    w = sample.weight.detach().abs().double().requires_grad_()
    psw = kwargs.get("per_sample_weights")
    if psw is not None:
        kwargs["per_sample_weights"] = psw = psw.detach().abs().double().requires_grad_()
    out = torch_fn(sample.indices, w, **kwargs)
    out.backward(grad.detach().abs().double())
    if op == "embedding":
        terms = int(torch.bincount(sample.indices.reshape(-1)).max()) if sample.indices.numel() else 1
    elif sample.indices.dim() == 2:
        terms = max(sample.indices.shape[1], int(torch.bincount(sample.indices.reshape(-1)).max()))
    else:
        terms = sample.indices.numel()
    return out.detach(), w.grad, None if psw is None else psw.grad, max(terms, 1)


def _agree(actual, expected, magnitude, terms, what):
    """``actual`` equals ``expected`` up to rounding: dtype tolerances, and for float16 / bfloat16 the
    bound of ``_magnitudes``."""
    dtype = expected.dtype
    if dtype not in LOW_PRECISION or magnitude is None:
        close(actual, expected, msg=lambda m: f"{what}: {m}")
        return
    assert actual.dtype == dtype and actual.shape == expected.shape, what
    eps = torch.finfo(dtype).eps
    allowed = (terms + 1) * eps * magnitude.to(torch.float64) + TOL[dtype]["atol"] * 1e-2
    diff = (actual.detach().double() - expected.detach().double()).abs()
    same_nan = actual.detach().isnan() & expected.detach().isnan()
    bad = ~((diff <= allowed) | same_nan)
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements differ by more than rounding, first at "
                           f"{bad.nonzero()[0].tolist()}: {actual[bad][0].item()} vs {expected[bad][0].item()}")


def _check_sample(op, api, sample):
    """One OpInfo sample through embedlib and through PyTorch: output, renormalised table, gradients."""
    torch_fn = F.embedding if op == "embedding" else F.embedding_bag
    w_ref = sample.weight.detach().clone().requires_grad_()
    w_el = sample.weight.detach().clone().requires_grad_()
    kw_ref, kw_el = _clone_kwargs(sample.kwargs), _clone_kwargs(sample.kwargs)
    # torch 2.13's CPU embedding_bag divides some rows' gradients by another index's count when
    # scale_grad_by_freq is set (pytorch/pytorch#190063, fixed by #190264; CUDA was right): the reference
    # is the documented rule instead, each row's gradient divided by its index's count in the whole input
    bag_freq = op == "embedding_bag" and kw_ref.pop("scale_grad_by_freq", False)
    # torch's backward refuses sparse=True with scale_grad_by_freq; embedlib divides each sparse row by
    # its index's count (a documented difference): its densified gradient is compared with the dense one
    sparse_freq = bool(sample.kwargs.get("sparse") and sample.kwargs.get("scale_grad_by_freq"))
    if sparse_freq:
        kw_ref["sparse"] = False
    out_ref = torch_fn(sample.indices, w_ref, **kw_ref)
    out_el, table = _call_el(op, api, w_el, sample.indices, kw_el)
    assert out_el.dtype == out_ref.dtype and out_el.shape == out_ref.shape
    close(table.detach(), w_ref.detach())  # max_norm renormalises the named rows in place

    grad = make_tensor(out_ref.shape, dtype=out_ref.dtype, device="cpu")
    magnitude = _magnitudes(op, sample, grad) if out_ref.dtype in LOW_PRECISION else (None, None, None, 1)
    _agree(out_el, out_ref, magnitude[0], magnitude[3], "output")
    out_ref.backward(grad)
    out_el.backward(grad)
    if bag_freq:
        counts = torch.bincount(sample.indices.reshape(-1), minlength=w_ref.shape[0]).clamp(min=1)
        w_ref.grad = w_ref.grad / counts[:, None].to(w_ref.dtype)
    assert table.grad.is_sparse == (w_ref.grad.is_sparse or sparse_freq)
    dense = lambda g: g.to_dense() if g.is_sparse else g  # noqa: E731
    _agree(dense(table.grad), dense(w_ref.grad), magnitude[1], magnitude[3], "weight gradient")
    psw_el, psw_ref = kw_el.get("per_sample_weights"), kw_ref.get("per_sample_weights")
    if psw_ref is not None:
        _agree(psw_el.grad, psw_ref.grad, magnitude[2], magnitude[3], "per_sample_weights gradient")


def _each_dtype(check):
    """Run ``check(dtype)`` for every dtype OpInfo lists for the CPU; a failure names its dtype."""
    for dtype in FLOAT_DTYPES:
        try:
            check(dtype)
        except AssertionError as e:
            e.add_note(f"dtype: {dtype}")
            raise


EMBEDDING_SAMPLES = embedding_samples(torch.float32, False)
EMBEDDING_BAG_SAMPLES = embedding_bag_samples(torch.float32, False)
EMBEDDING_GRAD_SAMPLES = embedding_samples(torch.float64, True)
EMBEDDING_BAG_GRAD_SAMPLES = embedding_bag_samples(torch.float64, True)


@pytest.mark.parametrize("i,api", _opinfo_params(EMBEDDING_SAMPLES, ("function", "layer")))
def test_opinfo_embedding(i, api):
    # OpInfo nn.functional.embedding: every sample (requires_grad=False gives the full list) in every
    # dtype OpInfo lists for the CPU, through embedlib's function and layer, against F.embedding
    # (output, in-place renormalisation, weight gradient)
    for k in i:
        _each_dtype(lambda dtype: _check_sample("embedding", api, embedding_samples(dtype, False)[k]))


@pytest.mark.parametrize("i,api", _opinfo_params(EMBEDDING_BAG_SAMPLES, ("function", "layer")))
def test_opinfo_embedding_bag(i, api):
    # OpInfo nn.functional.embedding_bag, as test_opinfo_embedding (and per-sample weights' gradients)
    for k in i:
        _each_dtype(lambda dtype: _check_sample("embedding_bag", api, embedding_bag_samples(dtype, False)[k]))


@pytest.mark.parametrize("i", range(len(EMBEDDING_GRAD_SAMPLES)), ids=[s.name for s in EMBEDDING_GRAD_SAMPLES])
def test_opinfo_embedding_gradcheck(i):
    # OpInfo's test_fn_grad and test_fn_gradgrad: the requires_grad samples in float64
    s = EMBEDDING_GRAD_SAMPLES[i]
    w = s.weight.detach().clone().requires_grad_()
    fn = lambda w: el.lookup(s.indices, w, **s.kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (w,))
    assert torch.autograd.gradgradcheck(fn, (w,))


@pytest.mark.parametrize("i", range(len(EMBEDDING_BAG_GRAD_SAMPLES)), ids=[s.name for s in EMBEDDING_BAG_GRAD_SAMPLES])
def test_opinfo_embedding_bag_gradcheck(i):
    # OpInfo's test_fn_grad (embedding_bag has supports_gradgrad=False): weight and per-sample weights
    s = EMBEDDING_BAG_GRAD_SAMPLES[i]
    w = s.weight.detach().clone().requires_grad_()
    kwargs = dict(s.kwargs)
    psw = kwargs.pop("per_sample_weights", None)
    if psw is None:
        assert torch.autograd.gradcheck(lambda w: el.embedding_bag(s.indices, w, **kwargs), (w,))
    else:
        psw = psw.detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda w, p: el.embedding_bag(s.indices, w, per_sample_weights=p, **kwargs),
                                        (w, psw))


def test_opinfo_embedding_forward_ad():
    # OpInfo's test_forward_mode_AD (nn.functional.embedding has supports_forward_ad=True), by
    # torch.func.jvp, on each requires_grad sample in float64
    for s in EMBEDDING_GRAD_SAMPLES:
        w = s.weight.detach().clone()
        tangent = make_tensor(w.shape, dtype=w.dtype, device="cpu")
        out, jvp = torch.func.jvp(lambda w: el.lookup(s.indices, w, **s.kwargs), (w,), (tangent,))
        ref_out, ref_jvp = torch.func.jvp(lambda w: F.embedding(s.indices, w, **s.kwargs), (w,), (tangent,))
        close(out, ref_out)
        close(jvp, ref_jvp)


NONCONTIGUOUS_PARAMS = (
    [pytest.param("embedding", i, id=f"embedding-{s.name}") for i, s in enumerate(EMBEDDING_GRAD_SAMPLES)]
    + [pytest.param("embedding_bag", i, id=f"embedding_bag-{s.name}") for i, s in enumerate(EMBEDDING_BAG_GRAD_SAMPLES)]
)


@pytest.mark.parametrize("op,i", NONCONTIGUOUS_PARAMS)
def test_opinfo_noncontiguous_samples(op, i):
    # OpInfo's test_noncontiguous_samples: every tensor of the sample made noncontiguous (same values,
    # NaN or 12 in between): the same output and gradients as the contiguous sample, in every dtype
    fn = el.lookup if op == "embedding" else el.embedding_bag

    def check(dtype):
        sample = (embedding_samples if op == "embedding" else embedding_bag_samples)(dtype, True)[i]
        w = sample.weight.detach().clone().requires_grad_()
        kw = _clone_kwargs(sample.kwargs)
        w_nc = noncontiguous_like(sample.weight.detach()).requires_grad_()
        kw_nc = {k: noncontiguous_like(v) if isinstance(v, torch.Tensor) else v
                 for k, v in _clone_kwargs(sample.kwargs).items()}
        idx_nc = noncontiguous_like(sample.indices)
        out = fn(sample.indices, w, **kw)
        out_nc = fn(idx_nc, w_nc, **kw_nc)
        close(out_nc, out, rtol=0, atol=0)
        grad = make_tensor(out.shape, dtype=dtype, device="cpu")
        out.backward(grad)
        out_nc.backward(noncontiguous_like(grad))
        close(w_nc.grad, w.grad)
        if kw.get("per_sample_weights") is not None:
            close(kw_nc["per_sample_weights"].grad, kw["per_sample_weights"].grad)

    _each_dtype(check)


@pytest.mark.parametrize("case", range(2), ids=["0d_weight", "3d_weight"])
def test_opinfo_embedding_error_inputs(case):
    # OpInfo's error_inputs_embedding (TestCommon.test_errors). Deliberate difference: PyTorch
    # RuntimeError "'weight' must be 2-D", embedlib ValueError.
    weight, indices, torch_error, regex = embedding_error_inputs()[case]
    with pytest.raises(torch_error, match=regex):
        F.embedding(indices, weight)
    with pytest.raises(ValueError, match="weight must be 2-D"):
        el.lookup(indices, weight)


def _start_pytorch_generators():
    """PyTorch's own sample generators, run in a child process (importing them changes global torch
    state, and needs expecttest: see tests/pytorch_cases.py); prints their samples' signatures as JSON."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p))
    return subprocess.Popen([sys.executable, "-c", PYTORCH_SIGNATURES_SCRIPT, str(HERE)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


_CHILD = {}


@pytest.fixture(autouse=True, scope="module")
def _pytorch_generators_in_background(request):
    """Start the child process of test_opinfo_port_matches_pytorch with this file's first test, when
    that test is selected: it spends ~5 s importing PyTorch's test modules, on a core the other
    (single-threaded) tests leave free."""
    if any(item.name == "test_opinfo_port_matches_pytorch" for item in request.session.items):
        _CHILD["proc"] = _start_pytorch_generators()
    yield
    proc = _CHILD.pop("proc", None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_opinfo_port_matches_pytorch():
    # The transcription in tests/pytorch_cases.py against PyTorch's own generators: the same samples,
    # shapes, layouts, options and dtypes. If this fails after a torch upgrade, re-transcribe them.
    proc = _CHILD.pop("proc", None) or _start_pytorch_generators()
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    theirs = json.loads(stdout.strip().splitlines()[-1])
    assert (theirs["S"], theirs["M"]) == (5, 10)
    generators = {"nn.functional.embedding": embedding_samples, "nn.functional.embedding_bag": embedding_bag_samples}
    for name, gen in generators.items():
        assert theirs[name + ":dtypes"] == sorted(str(d) for d in FLOAT_DTYPES)
        for dtype in (torch.float32, torch.float16):
            for rg in (True, False):
                ours = [repr(s.signature()) for s in gen(dtype, rg)]
                assert ours == theirs[f"{name}:{dtype}:{rg}"], (name, dtype, rg)
    errors = [[list(w.shape), list(i.shape), e.__name__, r] for w, i, e, r in embedding_error_inputs()]
    assert errors == theirs["nn.functional.embedding:errors"]
    assert "nn.functional.embedding_bag:errors" not in theirs  # no error inputs there to port


# ==================================================================================================
# Features issue 12 adds, that PyTorch's tests above do not use by themselves
# ==================================================================================================
def test_positional_constructor_arguments():
    # nn.Embedding(num_embeddings, embedding_dim, padding_idx, max_norm, ...) and
    # nn.EmbeddingBag(num_embeddings, embedding_dim, max_norm, norm_type, scale_grad_by_freq, mode, ...)
    assert repr(el.Embedding(10, 3, 0)) == repr(nn.Embedding(10, 3, 0))
    assert el.EmbeddingBag(10, 3, 1.0).max_norm == nn.EmbeddingBag(10, 3, 1.0).max_norm == 1.0


# ==================================================================================================
# Deliberate differences that PyTorch's tests do not reach (each a row of the README's table)
# ==================================================================================================
def test_difference_float_indices():
    # PyTorch RuntimeError ("Expected tensor for argument #1 'indices' to have one of the following
    # scalar types: Long, Int"); embedlib TypeError, also for bool masks.
    w = torch.randn(3, 2)
    differs(lambda: F.embedding(torch.tensor([0.0, 1.0]), w), RuntimeError,
            lambda: el.lookup(torch.tensor([0.0, 1.0]), w), TypeError, match="indices must be integers")
    differs(lambda: F.embedding_bag(torch.tensor([[0.0, 1.0]]), w), RuntimeError,
            lambda: el.embedding_bag(torch.tensor([[0.0, 1.0]]), w), TypeError, match="indices must be integers")


def test_difference_two_d_bag_input_with_no_columns():
    # PyTorch fails ("step must be nonzero"); embedlib returns one empty (zero) bag per row.
    w = torch.randn(3, 2, requires_grad=True)
    idx = torch.zeros(4, 0, dtype=torch.long)
    with pytest.raises(RuntimeError):
        F.embedding_bag(idx, w)
    for mode in ("sum", "mean", "max"):
        out = el.embedding_bag(idx, w, mode=mode)
        assert torch.equal(out, torch.zeros(4, 2))
        out.sum().backward()
        assert torch.equal(w.grad, torch.zeros(3, 2))
        w.grad = None


def test_difference_indices_keyword():
    # PyTorch names the indices `input` (F.embedding(input, weight), F.embedding_bag(input, weight, ...),
    # the layers' forward(input, ...)); embedlib names them `indices` everywhere.
    w = torch.randn(3, 2)
    x, offsets = torch.tensor([0, 2]), torch.tensor([0])
    assert torch.equal(F.embedding(input=x, weight=w), el.lookup(indices=x, weight=w))
    close(F.embedding_bag(input=x, weight=w, offsets=offsets), el.embedding_bag(indices=x, weight=w, offsets=offsets))
    for call in (lambda: el.lookup(input=x, weight=w),
                 lambda: el.embedding_bag(input=x, weight=w, offsets=offsets),
                 lambda: el.Embedding(3, 2)(input=x),
                 lambda: el.EmbeddingBag(3, 2)(input=x, offsets=offsets)):
        with pytest.raises(TypeError, match="input"):
            call()


def test_difference_nan_in_max_bag():
    # PyTorch's max skips a NaN that is not a bag's first entry (a comparison with NaN is false), so the
    # result depends on the order of the entries; embedlib lets a NaN win its column wherever it is
    # (as torch.amax and np.maximum do).
    w = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, -1.0]])
    nan_second, nan_first = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 0, 2]])
    assert torch.equal(F.embedding_bag(nan_second, w, mode="max"), torch.tensor([[3.0, 2.0]]))
    close(F.embedding_bag(nan_first, w, mode="max"), torch.tensor([[float("nan"), 2.0]]), equal_nan=True)
    for idx in (nan_second, nan_first):
        close(el.embedding_bag(idx, w, mode="max"), torch.tensor([[float("nan"), 2.0]]), equal_nan=True)


def test_difference_index_types():
    # F.embedding takes int32 and int64 indices only (RuntimeError for int8, int16, uint8) and tensors
    # only (TypeError for a list); embedlib takes every integer type, Python lists and NumPy arrays.
    # (F.embedding_bag takes the small integer types too.) Booleans: RuntimeError, embedlib TypeError.
    w = torch.randn(3, 2)
    for dtype in (torch.int8, torch.int16, torch.uint8):
        idx = torch.tensor([2, 0], dtype=dtype)
        with pytest.raises(RuntimeError, match="Long, Int"):
            F.embedding(idx, w)
        assert torch.equal(el.lookup(idx, w), w[[2, 0]])
        close(el.embedding_bag(idx, w, torch.tensor([0])), F.embedding_bag(idx, w, torch.tensor([0])))
    with pytest.raises(TypeError):
        F.embedding([2, 0], w)
    assert torch.equal(el.lookup([2, 0], w), w[[2, 0]])
    assert torch.equal(el.lookup(torch.tensor([2, 0]).numpy(), w), w[[2, 0]])
    differs(lambda: F.embedding(torch.tensor([True, False]), w), RuntimeError,
            lambda: el.lookup(torch.tensor([True, False]), w), TypeError, match="got booleans")


def test_difference_bad_offsets():
    # Offsets that decrease: PyTorch (2.13, CPU) returns garbage bags on one thread and raises an internal
    # RuntimeError ("Expected i < index_size") on several (not called here: undefined behaviour);
    # embedlib a ValueError naming them. An empty offsets with include_last_offset, float offsets:
    # PyTorch RuntimeError, embedlib ValueError / TypeError.
    w = torch.randn(3, 2)
    idx = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"offsets must not decrease, got offsets\[1\]=2 > offsets\[2\]=1"):
        el.embedding_bag(idx, w, torch.tensor([0, 2, 1]))
    empty = torch.tensor([], dtype=torch.long)
    differs(lambda: F.embedding_bag(idx, w, empty, include_last_offset=True), RuntimeError,
            lambda: el.embedding_bag(idx, w, empty, include_last_offset=True), ValueError,
            match="offsets needs at least one entry")
    differs(lambda: F.embedding_bag(idx, w, torch.tensor([0.0])), RuntimeError,
            lambda: el.embedding_bag(idx, w, torch.tensor([0.0])), TypeError, match="offsets must be integers")


def test_difference_empty_offsets():
    # An empty offsets (without include_last_offset): PyTorch makes no bag for "sum" and "mean" (and
    # crashes the process with a segmentation fault for "max", torch 2.13 on the CPU: not called here);
    # embedlib makes one bag of all the indices ("the last bag runs to the end").
    w = torch.randn(3, 2)
    idx, empty = torch.tensor([0, 1, 2]), torch.tensor([], dtype=torch.long)
    for mode in ("sum", "mean"):
        assert F.embedding_bag(idx, w, empty, mode=mode).shape == (0, 2)
    for mode in ("sum", "mean", "max"):
        close(el.embedding_bag(idx, w, empty, mode=mode), el.embedding_bag(idx, w, torch.tensor([0]), mode=mode))


def test_difference_non_positive_max_norm():
    # PyTorch's layers accept max_norm <= 0 (every looked-up row is then scaled to norm |max_norm| with
    # a flipped sign, or to zero); embedlib refuses it with a ValueError.
    ref = nn.Embedding(3, 2, max_norm=-1.0)
    ref(torch.tensor([0]))
    with pytest.raises(ValueError, match="max_norm must be a positive number"):
        el.Embedding(3, 2, max_norm=-1.0)
    with pytest.raises(ValueError, match="max_norm must be a positive number"):
        el.EmbeddingBag(3, 2, max_norm=0.0)


def test_difference_integer_per_sample_weights():
    # Integer per_sample_weights: PyTorch RuntimeError (not the weight's type), embedlib TypeError.
    w = torch.randn(3, 2)
    idx, off, psw = torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([1, 2])
    differs(lambda: F.embedding_bag(idx, w, off, mode="sum", per_sample_weights=psw), RuntimeError,
            lambda: el.embedding_bag(idx, w, off, mode="sum", per_sample_weights=psw), TypeError,
            match="per_sample_weights must hold floating-point numbers")
