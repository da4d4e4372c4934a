"""embedlib.torch on a CUDA GPU: every function and layer gives the CPU's results (forward and
gradients), and bad indices raise IndexError before any kernel runs, leaving CUDA usable.

Collected everywhere, skipped where there is no GPU. To smoke-test this file's logic on a machine
without one, run it with EMBEDLIB_TEST_DEVICE=cpu (the CPU then plays the GPU's part).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import TORCH, bag_cases, bitwise_equal, indices, lookup_cases, random_weights, ref_embedding_bag, tol

el = TORCH.el
DEVICE = torch.device(os.environ.get("EMBEDLIB_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

few = settings(max_examples=25)


def dev(a, requires_grad=False):
    t = torch.as_tensor(np.array(a, copy=True)).to(DEVICE)
    return t.requires_grad_() if requires_grad else t


def cpu(a, requires_grad=False):
    t = torch.as_tensor(np.array(a, copy=True))
    return t.requires_grad_() if requires_grad else t


def same(a_dev: torch.Tensor, b_cpu: torch.Tensor, exact=False, dtype=np.float32):
    assert a_dev.device.type == DEVICE.type, f"result on {a_dev.device}, expected {DEVICE}"
    a = a_dev.detach().cpu().numpy()
    b = b_cpu.detach().numpy()
    if exact:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, **tol(dtype))


def test_one_hot_on_the_device():
    idx = np.array([[3, 0], [1, 1]])
    out = el.one_hot(dev(idx), 4)
    same(out, el.one_hot(cpu(idx), 4), exact=True)
    out = el.one_hot(idx.tolist(), 4, device=DEVICE)  # device= builds it there
    same(out, el.one_hot(cpu(idx), 4), exact=True)


@few
@given(case=lookup_cases(random=True))
def test_lookup_onehot_matmul_and_backward_equal_cpu(case):
    idx, w = case
    g = np.random.default_rng(0).standard_normal(idx.shape + (w.shape[1],)).astype(w.dtype)
    wd, wc = dev(w, True), cpu(w, True)
    out_d, out_c = el.lookup(dev(idx), wd), el.lookup(cpu(idx), wc)
    same(out_d, out_c, exact=True)
    out_d.backward(dev(g))
    out_c.backward(cpu(g))
    same(wd.grad, wc.grad, dtype=w.dtype)
    same(el.onehot_matmul(dev(idx), dev(w)), el.onehot_matmul(cpu(idx), cpu(w)), exact=True)
    v = w.shape[0]
    same(el.lookup_backward(dev(idx), dev(g), v, padding_idx=0), el.lookup_backward(cpu(idx), cpu(g), v,
                                                                                     padding_idx=0), dtype=w.dtype)


def test_lists_and_numpy_indices_go_to_the_weights_device():
    w = dev(np.arange(8, dtype=np.float32).reshape(4, 2))
    for idx in ([3, 1], np.array([3, 1], dtype=np.int32)):
        out = el.lookup(idx, w)
        same(out, torch.tensor([[6.0, 7.0], [2.0, 3.0]]), exact=True)
        out = el.embedding_bag(idx, w, [0], mode="sum")
        same(out, torch.tensor([[8.0, 10.0]]), exact=True)


@few
@given(case=bag_cases())
def test_embedding_bag_equals_cpu_forward_and_grads(case):
    wd, wc = dev(case.weight, True), cpu(case.weight, True)
    psw_d = psw_c = None
    if case.per_sample_weights is not None:
        psw_d, psw_c = dev(case.per_sample_weights, True), cpu(case.per_sample_weights, True)
    offs = None if case.offsets is None else case.offsets
    kw = dict(mode=case.mode, padding_idx=case.padding_idx, include_last_offset=case.include_last_offset)
    out_d = el.embedding_bag(dev(case.indices), wd, None if offs is None else dev(offs), per_sample_weights=psw_d,
                             **kw)
    out_c = el.embedding_bag(cpu(case.indices), wc, None if offs is None else cpu(offs), per_sample_weights=psw_c,
                             **kw)
    same(out_d, out_c, dtype=case.weight.dtype)
    np.testing.assert_allclose(out_d.detach().cpu().numpy(), ref_embedding_bag(case), **tol(case.weight.dtype))
    g = np.random.default_rng(1).standard_normal(tuple(out_c.shape)).astype(case.weight.dtype)
    out_d.backward(dev(g))
    out_c.backward(cpu(g))
    same(wd.grad, wc.grad, dtype=case.weight.dtype)
    if psw_d is not None:
        same(psw_d.grad, psw_c.grad, dtype=case.weight.dtype)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_empty_bags_on_the_device(mode):
    w = dev(np.ones((3, 2), dtype=np.float32))
    same(el.embedding_bag(dev(np.zeros((4, 0), dtype=np.int64)), w, mode=mode), torch.zeros(4, 2), exact=True)
    same(el.embedding_bag(dev(np.array([2])), w, dev(np.array([0, 0, 1])), mode=mode),
         torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]), exact=True)


@few
@given(w=random_weights(), data=st.data())
def test_renorm_equals_cpu(w, data):
    w = (w * 2).astype(w.dtype)
    idx = data.draw(indices(w.shape[0]))
    a, b = dev(w), cpu(w)
    el.renorm_(a, dev(idx), 1.0)
    el.renorm_(b, cpu(idx), 1.0)
    same(a, b, dtype=w.dtype)


@few
@given(case=lookup_cases(random=True), data=st.data())
def test_embedding_layer_equals_cpu_and_nn_embedding(case, data):
    idx, w = case
    idx = idx.astype(np.int64)  # nn.Embedding takes int32/int64 only
    pad = data.draw(st.one_of(st.none(), st.integers(0, w.shape[0] - 1)))
    max_norm = data.draw(st.one_of(st.none(), st.floats(0.3, 2.5)))
    layers = [el.Embedding.from_weight(dev(w), padding_idx=pad, max_norm=max_norm),
              el.Embedding.from_weight(cpu(w), padding_idx=pad, max_norm=max_norm),
              nn.Embedding.from_pretrained(dev(w), freeze=False, padding_idx=pad, max_norm=max_norm)]
    g = np.random.default_rng(2).standard_normal(idx.shape + (w.shape[1],)).astype(w.dtype)
    outs = []
    for layer in layers:
        on_dev = layer.weight.device.type == DEVICE.type
        out = layer(dev(idx) if on_dev else cpu(idx))
        out.backward(dev(g) if on_dev else cpu(g))
        outs.append(out)
    assert layers[0].weight.device.type == DEVICE.type
    same(outs[0], outs[1].cpu(), dtype=w.dtype)
    same(outs[0], outs[2].cpu(), dtype=w.dtype)
    same(layers[0].weight, layers[1].weight.cpu(), dtype=w.dtype)
    same(layers[0].weight.grad, layers[1].weight.grad.cpu(), dtype=w.dtype)
    same(layers[0].weight.grad, layers[2].weight.grad.cpu(), dtype=w.dtype)


@few
@given(case=bag_cases(), max_norm=st.one_of(st.none(), st.floats(0.3, 2.5)))
def test_embedding_bag_layer_equals_cpu(case, max_norm):
    opts = dict(mode=case.mode, padding_idx=case.padding_idx, max_norm=max_norm,
                include_last_offset=case.include_last_offset)
    ld = el.EmbeddingBag.from_weight(dev(case.weight), **opts)
    lc = el.EmbeddingBag.from_weight(cpu(case.weight), **opts)
    psw = case.per_sample_weights
    offs = case.offsets
    out_d = ld(dev(case.indices), None if offs is None else dev(offs), None if psw is None else dev(psw))
    out_c = lc(cpu(case.indices), None if offs is None else cpu(offs), None if psw is None else cpu(psw))
    same(out_d, out_c, dtype=case.weight.dtype)
    same(ld.weight, lc.weight, dtype=case.weight.dtype)
    g = np.random.default_rng(3).standard_normal(tuple(out_c.shape)).astype(case.weight.dtype)
    out_d.backward(dev(g))
    out_c.backward(cpu(g))
    same(ld.weight.grad, lc.weight.grad, dtype=case.weight.dtype)


def test_layers_built_on_the_device():
    for cls in (el.Embedding, el.EmbeddingBag):
        layer = cls(50, 8, padding_idx=3, seed=4, device=DEVICE, dtype=torch.float64)
        assert layer.weight.device.type == DEVICE.type and layer.weight.dtype == torch.float64
        assert torch.equal(layer.weight[3].cpu(), torch.zeros(8, dtype=torch.float64))
        # the same seed gives the same table on every device
        same(layer.weight, cls(50, 8, padding_idx=3, seed=4, dtype=torch.float64).weight, exact=True)
        layer.to("cpu").to(DEVICE)  # an ordinary nn.Module


def test_training_step_on_the_device_equals_cpu():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((20, 4)).astype(np.float32)
    models = [el.Embedding.from_weight(dev(w)), el.Embedding.from_weight(cpu(w))]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    for _ in range(5):
        idx = rng.integers(0, 20, size=(8, 3))
        for m, opt, put in zip(models, opts, (dev, cpu)):
            opt.zero_grad()
            m(put(idx)).pow(2).sum().backward()
            opt.step()
    same(models[0].weight, models[1].weight)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_nearest_neighbors_equal_cpu(metric):
    w = np.random.default_rng(7).standard_normal((40, 6)).astype(np.float32)
    for q in (5, np.array([1, 2, 39]), np.random.default_rng(8).standard_normal((3, 6)).astype(np.float32)):
        qd = q if isinstance(q, int) else dev(q)
        qc = q if isinstance(q, int) else cpu(q)
        a = el.nearest_neighbors(dev(w), qd, 7, metric=metric)
        b = el.nearest_neighbors(cpu(w), qc, 7, metric=metric)
        same(a.indices, b.indices, exact=True)
        same(a.scores, b.scores, dtype=np.float32)


def test_hash_bucket_of_device_tensors():
    keys = torch.arange(-100, 100)
    out = el.hash_bucket(keys.to(DEVICE), 17, seed=2)
    same(out, el.hash_bucket(keys, 17, seed=2), exact=True)


def test_gradcheck_on_the_device():
    w = torch.randn(6, 3, dtype=torch.float64, device=DEVICE, requires_grad=True)
    idx = torch.tensor([[0, 5], [5, 2]], device=DEVICE)
    assert torch.autograd.gradcheck(lambda x: el.lookup(idx, x), (w,))
    off = torch.tensor([0, 1], device=DEVICE)
    psw = torch.randn(4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    for mode in ("sum", "mean", "max"):
        assert torch.autograd.gradcheck(lambda x: el.embedding_bag(idx.reshape(-1), x, off, mode=mode), (w,))
    assert torch.autograd.gradcheck(
        lambda x, p: el.embedding_bag(idx.reshape(-1), x, off, mode="sum", per_sample_weights=p), (w, psw))


# --------------------------------------------------------------------------------------------------
# bad indices: IndexError before any kernel, and CUDA still works afterwards
# --------------------------------------------------------------------------------------------------
def test_bad_indices_raise_index_error_and_leave_cuda_usable():
    w_np = (np.random.default_rng(9).standard_normal((13, 4)) * 3 + 3).astype(np.float32)
    w = dev(w_np, True)
    calls = {
        "one_hot": lambda idx: el.one_hot(idx, 13),
        "onehot_matmul": lambda idx: el.onehot_matmul(idx, w),
        "lookup": lambda idx: el.lookup(idx, w),
        "lookup_backward": lambda idx: el.lookup_backward(idx, torch.ones(len(idx), 4, device=DEVICE), 13),
        "embedding_bag": lambda idx: el.embedding_bag(idx, w, torch.tensor([0, 1], device=DEVICE), mode="max"),
        "renorm_": lambda idx: el.renorm_(w.data, idx, 0.5),
        "Embedding": lambda idx: el.Embedding.from_weight(w.detach(), max_norm=0.5)(idx),
        "EmbeddingBag": lambda idx: el.EmbeddingBag.from_weight(w.detach(), max_norm=0.5)(
            idx, torch.tensor([0], device=DEVICE)),
        "nearest_neighbors": lambda idx: el.nearest_neighbors(w.detach(), idx, 2),
    }
    for name, call in calls.items():
        for bad in (13, 1000, -1):
            idx = torch.tensor([0, 5, bad], device=DEVICE)
            with pytest.raises(IndexError, match=rf"(?s)(?=.*{bad})(?=.*13)"):
                call(idx)
            with pytest.raises(IndexError):
                call([0, bad])
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()  # a device-side assert would surface here...
    assert bitwise_equal(w, w_np) and w.grad is None
    out = el.lookup(torch.tensor([2, 12], device=DEVICE), w)  # ...or here: CUDA must still compute
    out.sum().backward()
    same(out, torch.from_numpy(w_np[[2, 12]]), exact=True)
    assert float(w.grad.sum().cpu()) == 8.0
    x = torch.arange(10.0, device=DEVICE)
    assert float((x * 2).sum().cpu()) == 90.0
