"""The Triton kernels of embedlib.torch (chapter 9) give the torch reference's results.

Every kernel test runs on two kinds of device:

* ``interpreter``: CPU tensors through Triton's interpreter, so CI covers the kernels without a GPU.
  ``TRITON_INTERPRET=1`` has to be in the environment before ``triton`` is first imported, and it
  must not leak into the rest of the suite (it would make every torch CPU call interpret kernels),
  so :func:`test_kernels_in_a_child_process_with_triton_interpret` runs this file again in a child pytest process
  with the variable set; that child collects the ``interpreter`` tests and nothing else.
* ``cuda``: compiled kernels on the GPU, in this process; skipped without one.

Sizes are small: the interpreter runs each program of a kernel in Python.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings

from conftest import ROOT, bag_cases

import embedlib.torch as el
from embedlib.torch import _triton

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None

if INTERPRETED:
    DEVICES = [pytest.param("cpu", id="interpreter")]
else:
    DEVICES = [pytest.param("cuda", id="cuda", marks=[
        pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])]

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    monkeypatch.delenv("EMBEDLIB_TRITON", raising=False)
    return torch.device(request.param)


@pytest.fixture
def kernels():
    from embedlib.torch._triton import kernels
    return kernels


@pytest.fixture
def calls(monkeypatch, kernels):
    """Counts the launches of each kernel wrapper, to prove that the public functions used them."""
    counts = {}
    for name in ("gather", "scatter_add", "scatter_add_deterministic", "bag_forward", "bag_backward"):
        original = getattr(kernels, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernels, name, counted)
    return counts


def rand(*shape, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).to(device)


def randint(high, *shape, device="cpu", dtype=torch.int64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=g).to(dtype).to(device)


def bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


# --------------------------------------------------------------------------------------------------
# The child process
# --------------------------------------------------------------------------------------------------
@pytest.mark.skipif(INTERPRETED, reason="this process is the child")
def test_kernels_in_a_child_process_with_triton_interpret():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("EMBEDLIB_TRITON", None)
    child = subprocess.run(
        [sys.executable, "-m", "pytest", os.path.abspath(__file__), "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", "-k", "interpreter"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = child.stdout[-6000:] + child.stderr[-3000:]
    assert child.returncode == 0, report
    assert " passed" in child.stdout and " skipped" not in child.stdout.splitlines()[-1], report


# --------------------------------------------------------------------------------------------------
# Gather (forward)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [1, 3, 12, 16, 33])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_gather_copies_rows_exactly(device, kernels, dim, index_dtype):
    w = rand(50, dim, device=device)
    idx = randint(50, 7, 9, device=device, dtype=index_dtype)
    out = _triton.gather(idx, w)
    assert out.shape == (7, 9, dim) and out.device.type == device.type
    assert bits(out) == bits(w.cpu()[idx.cpu().long()])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_gather_other_float_types(device, dtype):
    w = rand(20, 5, dtype=dtype, device=device)
    idx = randint(20, 30, device=device)
    assert bits(_triton.gather(idx, w)) == bits(w.cpu()[idx.cpu()])


def test_gather_strided_weight_empty_and_wide_rows(device, kernels, monkeypatch):
    w = rand(6, 40, device=device).t()  # (40, 6), row stride 1, column stride 40
    idx = randint(40, 25, device=device)
    assert bits(_triton.gather(idx, w)) == bits(w.cpu()[idx.cpu()])
    assert _triton.gather(idx[:0], w).shape == (0, 6)
    assert _triton.gather(idx, w[:, :0]).shape == (25, 0)
    monkeypatch.setattr(kernels, "MAX_BLOCK_D", 16)  # rows wider than a block: a second grid axis
    wide = rand(50, 40, device=device)
    assert bits(_triton.gather(idx[:10], wide)) == bits(wide.cpu()[idx[:10].cpu()])


# --------------------------------------------------------------------------------------------------
# Scatter-add (backward), atomic and deterministic
# --------------------------------------------------------------------------------------------------
def reference_scatter(idx, grad, num_embeddings, pad=None):
    out = torch.zeros(num_embeddings, grad.shape[-1], dtype=torch.float64)
    out.index_add_(0, idx.cpu().reshape(-1).long(), grad.cpu().reshape(-1, grad.shape[-1]).double())
    if pad is not None:
        out[pad] = 0
    return out


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
@pytest.mark.parametrize("dim", [1, 12, 33])
@pytest.mark.parametrize("pad", [None, 3])
def test_scatter_add_sums_repeated_rows(device, deterministic, dim, pad):
    idx = randint(10, 200, device=device)  # 200 indices into 10 rows: every row repeated
    grad = rand(200, dim, device=device)
    out = _triton.scatter_add(idx, grad, 12, pad, deterministic)
    assert out.shape == (12, dim) and out.dtype == grad.dtype
    np.testing.assert_allclose(out.cpu().double().numpy(), reference_scatter(idx, grad, 12, pad).numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[10:].cpu().numpy(), 0)  # rows nobody asked for stay zero
    if pad is not None:
        np.testing.assert_array_equal(out[pad].cpu().numpy(), 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_scatter_add_other_float_types(device, dtype, deterministic):
    idx = randint(6, 3, 40, device=device)
    grad = rand(3, 40, 4, dtype=dtype, device=device)
    out = _triton.scatter_add(idx, grad, 6, None, deterministic)
    assert out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-2  # float16 sums are rounded once, from float32
    np.testing.assert_allclose(out.cpu().double().numpy(), reference_scatter(idx, grad, 6).numpy(),
                               rtol=tol, atol=tol)


def test_deterministic_scatter_is_bitwise_stable_and_cuts_long_runs(device, kernels):
    """Row 0 is repeated 300 times: with pieces of 4 members the sums go through four levels of
    partial sums, and every run gives the same bits."""
    idx = torch.cat([torch.zeros(300, dtype=torch.int64), randint(50, 300, seed=5)])
    idx = idx[torch.randperm(600, generator=torch.Generator().manual_seed(2))].to(device)
    grad = rand(600, 7, device=device, seed=3) * 1e3
    flat, g = _triton.flat_index(idx), grad
    first = kernels.scatter_add_deterministic(flat, g, 50, -1, chunk=4)
    for _ in range(3):
        assert bits(kernels.scatter_add_deterministic(flat, g, 50, -1, chunk=4)) == bits(first)
    np.testing.assert_allclose(first.cpu().double().numpy(), reference_scatter(idx, grad, 50).numpy(),
                               rtol=1e-5, atol=1e-2)
    # The order is fixed by the indices alone: a piece of one member is that member, bit for bit.
    single = kernels.scatter_add_deterministic(flat[:1].contiguous(), g[:1].contiguous(), 50, -1, chunk=4)
    assert bits(single[int(idx[0])]) == bits(g[0])


def test_scatter_add_of_nothing(device):
    for deterministic in (False, True):
        out = _triton.scatter_add(torch.zeros(0, dtype=torch.int64, device=device),
                                  torch.zeros(0, 3, device=device), 4, None, deterministic)
        np.testing.assert_array_equal(out.cpu().numpy(), np.zeros((4, 3)))


# --------------------------------------------------------------------------------------------------
# The public functions on the kernels: lookup, lookup_backward, embedding_bag
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("deterministic", [None, False, True])
@pytest.mark.parametrize("pad", [None, 2])
def test_lookup_forward_and_backward_equal_f_embedding(device, calls, deterministic, pad):
    w_cpu = rand(15, 6)
    idx_cpu = randint(15, 4, 25)
    g_cpu = rand(4, 25, 6, seed=4)
    w = w_cpu.to(device, copy=True).requires_grad_()
    ref_w = w_cpu.clone().requires_grad_()
    out = el.lookup(idx_cpu.to(device), w, padding_idx=pad, deterministic=deterministic)
    ref = F.embedding(idx_cpu, ref_w, padding_idx=pad)
    assert bits(out) == bits(ref)
    out.backward(g_cpu.to(device))
    ref.backward(g_cpu)
    np.testing.assert_allclose(w.grad.cpu().numpy(), ref_w.grad.numpy(), rtol=1e-5, atol=1e-5)
    grad = el.lookup_backward(idx_cpu.to(device), g_cpu.to(device), 15, padding_idx=pad, deterministic=deterministic)
    np.testing.assert_allclose(grad.cpu().numpy(), ref_w.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert calls.get("gather") == 1
    used = "scatter_add_deterministic" if deterministic else "scatter_add"
    assert calls.get(used) == 2, calls


def test_lookup_follows_torch_deterministic_switch(device, calls):
    w = rand(8, 3, device=device).requires_grad_()
    idx = randint(8, 40, device=device)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        el.lookup(idx, w).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert calls.get("scatter_add_deterministic") == 1 and "scatter_add" not in calls


def test_deterministic_lookup_backward_is_bitwise_stable(device):
    idx = randint(5, 500, device=device)  # 100 repeats per row: atomics would add in any order
    g = rand(500, 8, device=device) * 1e4
    first = el.lookup_backward(idx, g, 5, deterministic=True)
    for _ in range(3):
        assert bits(el.lookup_backward(idx, g, 5, deterministic=True)) == bits(first)


def test_gradcheck_through_the_kernels(device):
    idx = randint(6, 2, 7, device=device)
    w = rand(6, 3, dtype=torch.float64, device=device).requires_grad_()
    for deterministic in (False, True):  # (padding_idx is left out: it drops a gradient on purpose)
        assert torch.autograd.gradcheck(lambda x: el.lookup(idx, x, deterministic=deterministic), (w,))
    g = rand(2, 7, 3, dtype=torch.float64, device=device).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: el.lookup_backward(idx, x, 6, padding_idx=1), (g,))


def test_bad_index_is_refused_before_any_kernel(device, calls):
    w = rand(4, 2, device=device)
    for call in (lambda: el.lookup(torch.tensor([0, 4], device=device), w),
                 lambda: el.embedding_bag(torch.tensor([1, -1], device=device), w, torch.tensor([0], device=device))):
        with pytest.raises(IndexError, match="num_embeddings=4"):
            call()
    assert not calls


def _bag_args(case, device, requires_grad):
    w = torch.tensor(case.weight, device=device, requires_grad=requires_grad)
    psw = None
    if case.per_sample_weights is not None:
        psw = torch.tensor(case.per_sample_weights, device=device, requires_grad=requires_grad)
    offsets = None if case.offsets is None else torch.tensor(case.offsets, device=device)
    return torch.tensor(case.indices, device=device), w, offsets, psw


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bag_cases())
def test_embedding_bag_equals_the_torch_path(device, case):
    """Forward and gradients (weight and per-sample weights) of the bag kernels equal embedlib's
    torch-operations path, which the main suite checks against F.embedding_bag and a loop."""
    idx, w, offsets, psw = _bag_args(case, device, True)
    kwargs = dict(mode=case.mode, padding_idx=case.padding_idx, include_last_offset=case.include_last_offset)
    out = el.embedding_bag(idx, w, offsets, per_sample_weights=psw, **kwargs)
    g = rand(*out.shape, dtype=out.dtype, seed=7)
    out.backward(g.to(device))

    os.environ["EMBEDLIB_TRITON"] = "0"  # the reference: the same function on torch operations
    try:
        r_idx, r_w, r_offsets, r_psw = _bag_args(case, "cpu", True)
        ref = el.embedding_bag(r_idx, r_w, r_offsets, per_sample_weights=r_psw, **kwargs)
        ref.backward(g)
    finally:
        del os.environ["EMBEDLIB_TRITON"]
    tol = dict(rtol=1e-5, atol=1e-5) if case.weight.dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.detach().cpu().numpy(), ref.detach().numpy(), **tol)
    np.testing.assert_allclose(w.grad.cpu().numpy(), r_w.grad.numpy(), **tol)
    if psw is not None:
        np.testing.assert_allclose(psw.grad.cpu().numpy(), r_psw.grad.numpy(), **tol)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_equals_f_embedding_bag(device, calls, mode):
    w_cpu = rand(30, 5)
    idx_cpu = randint(30, 60)
    off_cpu = torch.tensor([0, 0, 7, 20, 20, 45])  # empty bags at 0 and 3
    psw_cpu = rand(60, seed=9) if mode == "sum" else None
    for pad in (None, 4):
        w = w_cpu.to(device, copy=True).requires_grad_()
        ref_w = w_cpu.clone().requires_grad_()
        psw = None if psw_cpu is None else psw_cpu.to(device)
        out = el.embedding_bag(idx_cpu.to(device), w, off_cpu.to(device), mode=mode, per_sample_weights=psw,
                               padding_idx=pad)
        ref = F.embedding_bag(idx_cpu, ref_w, off_cpu, mode=mode, per_sample_weights=psw_cpu, padding_idx=pad)
        np.testing.assert_allclose(out.detach().cpu().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
        g = rand(*ref.shape, seed=11)
        out.backward(g.to(device))
        ref.backward(g)
        np.testing.assert_allclose(w.grad.cpu().numpy(), ref_w.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert calls.get("bag_forward") == 2


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_forward_mode_ad_through_the_kernels(device, calls, mode):
    # jvp of the kernels' lookup and bags: the tangent through the same kernels (max: the winning
    # row's), equal to the Jacobian that reverse mode gives times the tangent
    w, t = rand(12, 5, dtype=torch.float64, device=device), rand(12, 5, dtype=torch.float64, device=device, seed=3)
    idx, off = randint(12, 20, device=device), torch.tensor([0, 0, 7, 13], device=device)
    psw, psw_t = (rand(20, dtype=torch.float64, device=device, seed=4),
                  rand(20, dtype=torch.float64, device=device, seed=5)) if mode == "sum" else (None, None)
    primals, tangents = ((w, psw), (t, psw_t)) if psw is not None else ((w,), (t,))

    def bags(*args):
        return el.embedding_bag(idx, args[0], off, mode=mode, padding_idx=2,
                                per_sample_weights=args[1] if len(args) > 1 else None)

    _, out_t = torch.func.jvp(bags, primals, tangents)
    # the primal ran the bag kernel, and so did the tangent of a sum or mean (a max's is a gather)
    assert calls.get("bag_forward", 0) == (1 if mode == "max" else 2 + (psw is not None))
    jacobians = torch.autograd.functional.jacobian(bags, primals)
    expected = sum((j.reshape(out_t.numel(), -1) @ x.reshape(-1)).reshape(out_t.shape)
                   for j, x in zip(jacobians, tangents))
    torch.testing.assert_close(out_t, expected)
    _, lookup_t = torch.func.jvp(lambda x: el.lookup(idx, x), (w,), (t,))
    assert torch.equal(lookup_t, t[idx])


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_sparse_gradients_with_the_kernels(device, mode):
    w_cpu, idx_cpu, off_cpu = rand(30, 5, dtype=torch.float64), randint(30, 40), torch.tensor([0, 9, 9, 31])
    grads = []
    for dev in (device, "cpu"):
        w = w_cpu.to(dev, copy=True).requires_grad_()
        el.embedding_bag(idx_cpu.to(dev), w, off_cpu.to(dev), mode=mode, padding_idx=4, sparse=True).sum().backward()
        el.lookup(idx_cpu.to(dev), w, sparse=True).pow(2).sum().backward()
        grads.append(w.grad.coalesce().to_dense().cpu())
    torch.testing.assert_close(grads[0], grads[1])


def test_embedding_bag_2d_input_and_max_with_nan(device):
    w = torch.tensor([[np.nan, 1.0], [2.0, 3.0], [5.0, 0.0]], device=device, requires_grad=True)
    out = el.embedding_bag(torch.tensor([[1, 0, 2], [2, 1, 1]], device=device), w, mode="max")
    assert np.isnan(out[0, 0].item()) and out[0, 1].item() == 3.0
    np.testing.assert_array_equal(out[1].detach().cpu().numpy(), [5.0, 3.0])
    out.backward(torch.tensor([[10.0, 100.0], [1.0, 1000.0]], device=device))
    np.testing.assert_array_equal(w.grad.cpu().numpy(), [[10.0, 0.0], [0.0, 1100.0], [1.0, 0.0]])
    empty = el.embedding_bag(torch.zeros((3, 0), dtype=torch.int64, device=device), w, mode="mean")
    np.testing.assert_array_equal(empty.detach().cpu().numpy(), np.zeros((3, 2)))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_deterministic_bag_gradient_is_bitwise_stable(device, calls, mode):
    idx = randint(4, 300, device=device)
    off = torch.arange(0, 300, 3, device=device)
    w = rand(4, 6, device=device) * 1e3
    grads = []
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(3):
            wg = w.clone().requires_grad_()
            el.embedding_bag(idx, wg, off, mode=mode).backward(rand(100, 6, device=device, seed=13))
            grads.append(bits(wg.grad))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert grads[0] == grads[1] == grads[2]
    assert calls.get("scatter_add_deterministic") == 3 and "bag_backward" not in calls


def test_bag_errors_are_those_of_the_torch_path(device, monkeypatch):
    """The kernel path checks its arguments itself (in one host sync): same errors, same words."""
    w = rand(5, 2, device=device)
    idx = torch.tensor([0, 1, 2], device=device)
    cases = [
        dict(indices=idx, offsets=torch.tensor([1], device=device)),
        dict(indices=idx, offsets=torch.tensor([0, 2, 1], device=device)),
        dict(indices=idx, offsets=torch.tensor([0, 4], device=device)),
        dict(indices=idx, offsets=torch.tensor([0, 2], device=device), include_last_offset=True),
        dict(indices=torch.tensor([0, 7], device=device), offsets=torch.tensor([0], device=device)),
        dict(indices=idx, offsets=None),
        dict(indices=idx, offsets=torch.tensor([0], device=device), mode="max",
             per_sample_weights=torch.ones(3, device=device)),
        dict(indices=idx, offsets=torch.tensor([0], device=device), padding_idx=9),
        dict(indices=idx.float(), offsets=torch.tensor([0], device=device)),
    ]
    for case in cases:
        errors = []
        for switch in ("1", "0"):
            monkeypatch.setenv("EMBEDLIB_TRITON", switch)
            kwargs = dict(case)
            with pytest.raises((ValueError, IndexError, TypeError)) as info:
                el.embedding_bag(kwargs.pop("indices"), w, kwargs.pop("offsets"), **kwargs)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1], case


def test_the_benchmarks_tuning_suite_runs_the_kernels(device):
    """``python -m embedlib.bench --suites tune`` launches the kernels directly with each block size."""
    from embedlib.bench import SIZES, suites
    cfg = dict(SIZES["small"], gpu_v=40, gpu_b=16, bag_v=30, bag_d=5, gpu_bags=6, gpu_bag_size=3, repeats=3,
               min_sample=0.0)
    records = suites.tune(cfg, str(device), log=lambda *a: None)
    assert {r["name"] for r in records} == {"gather", "scatter_add", "bag_forward"}
    assert len(records) == 3 * 4 * 2 * 2 + 3 * 3 and all(r["seconds"] > 0 for r in records)
    assert sum(r["params"]["default"] for r in records) == 3 * 2 + 1  # the kernels' own choice is among them


# --------------------------------------------------------------------------------------------------
# Alignment (what the compiled code makes of it: test_triton_offline.py)
# --------------------------------------------------------------------------------------------------
def test_align_is_the_16_byte_vector_width_that_fits(kernels):
    k = kernels
    assert k.align(12, 4, 12) == 4 and k.align(64, 4, 64) == 4 and k.align(64, 2, 64) == 8
    assert k.align(12, 8, 12) == 2 and k.align(13, 4, 13) == 1 and k.align(12, 4, 13) == 1
    assert k.align(12, 4, 12, col_strides=(40,)) == 1
