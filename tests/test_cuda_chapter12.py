"""Chapter 12's torch functions on a CUDA GPU give the CPU's results (forward and gradients), and the
MiniLM encoder matches the reference there too. Skipped without a GPU; run with
EMBEDLIB_TEST_DEVICE=cpu to smoke-test this file's logic on a machine without one."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import ROOT, TORCH

el = TORCH.el
DEVICE = torch.device(os.environ.get("EMBEDLIB_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def both(a, requires_grad=False):
    """The same float64 values on the CPU and on DEVICE."""
    c = torch.as_tensor(np.array(a, copy=True)).requires_grad_(requires_grad)
    d = c.detach().to(DEVICE).requires_grad_(requires_grad)
    return c, d


def test_positions_on_the_device():
    torch.testing.assert_close(el.sinusoidal_positions(64, 16, device=DEVICE).cpu(), el.sinusoidal_positions(64, 16))
    xc, xd = both(np.random.default_rng(0).standard_normal((2, 7, 8)), requires_grad=True)
    pos = np.arange(7) * 5
    oc, od = el.apply_rope(xc, pos), el.apply_rope(xd, pos)
    torch.testing.assert_close(od.cpu(), oc)
    g = torch.randn_like(oc)
    torch.testing.assert_close(torch.autograd.grad(od, xd, g.to(DEVICE))[0].cpu(), torch.autograd.grad(oc, xc, g)[0])


def test_patches_on_the_device():
    rng = np.random.default_rng(1)
    (ic, id_), (wc, wd), (bc, bd) = (both(rng.standard_normal(s), True) for s in ((3, 2, 8, 8), (5, 2, 4, 4), (5,)))
    oc, od = el.patch_embedding(ic, wc, bc), el.patch_embedding(id_, wd, bd)
    torch.testing.assert_close(od.cpu(), oc)
    g = torch.randn_like(oc)
    for a, b in zip(torch.autograd.grad(od, (id_, wd, bd), g.to(DEVICE)), torch.autograd.grad(oc, (ic, wc, bc), g)):
        torch.testing.assert_close(a.cpu(), b)


def test_quantize_on_the_device():
    rng = np.random.default_rng(2)
    (vc, vd), (cc, cd) = both(rng.standard_normal((40, 3)), True), both(rng.standard_normal((9, 3)), True)
    (kc, qc), (kd, qd) = el.quantize(vc, cc), el.quantize(vd, cd)
    assert torch.equal(kd.cpu(), kc) and torch.equal(qd.detach().cpu(), qc.detach())
    g = torch.randn_like(qc)
    for a, b in zip(torch.autograd.grad(qd, (vd, cd), g.to(DEVICE)), torch.autograd.grad(qc, (vc, cc), g)):
        torch.testing.assert_close(a.cpu(), b)


def test_minilm_on_the_device():
    from embedlib.torch.minilm import load_minilm

    ref = np.load(ROOT / "tests" / "data" / "minilm_reference.npz")
    model = load_minilm().to(DEVICE)
    with torch.no_grad():
        v = model.sentence_vectors(torch.from_numpy(ref["input_ids"]).to(DEVICE),
                                   torch.from_numpy(ref["attention_mask"]).to(DEVICE)).cpu().numpy()
    assert np.abs(v - ref["sentence_vectors"]).max() < 1e-5
