"""Case data for ``tests/test_pytorch_ported.py``: PyTorch's own embedding test inputs, transcribed.

* ``embedding_samples`` / ``embedding_bag_samples`` / ``embedding_error_inputs`` are line-by-line
  transcriptions of ``sample_inputs_embedding``, ``sample_inputs_embedding_bag`` and
  ``error_inputs_embedding`` in PyTorch's ``torch/testing/_internal/common_methods_invocations.py``
  (torch 2.13.0), the OpInfo samples of ``nn.functional.embedding`` and ``nn.functional.embedding_bag``.
  They are transcribed rather than imported: importing that module needs ``expecttest`` (not a
  requirement here) and changes global torch state on import (``torch.backends.disable_global_flags()``
  in ``common_utils``), which would leak into every other test file run by the same pytest worker.
  ``test_opinfo_port_matches_pytorch`` checks, in a child process, that the transcription still yields
  the same samples (shapes, layouts, options) as PyTorch's own generators.
* ``embedding_bag_reference_impl`` is ``TestEmbeddingNNDeviceType._embedding_bag_reference_impl`` of
  ``test/nn/test_embedding.py``; ``PREC`` is PyTorch's ``dtype2prec_DONTUSE``; ``noncontiguous_like``
  is ``common_utils.noncontiguous_like``.

Samples are made with the public ``torch.testing.make_tensor`` from a fixed seed (inside
``torch.random.fork_rng``, so the global generator is left as it was), so every run sees the same values.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
from torch.testing import make_tensor

S, M = 5, 10  # common_methods_invocations' sizes (S = 5, M = 10)

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)

#: PyTorch's ``dtype2prec_DONTUSE``: the absolute tolerance its embedding tests use per dtype
PREC = {torch.float32: 1e-5, torch.float64: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-1}

#: the options each OpInfo sample may carry, and the feature of embedlib that each needs
FUNCTION_ONLY_OPTIONS = ("max_norm", "norm_type")  # in the layers, and (issue 12) in the functions too
GRADIENT_OPTIONS = ("scale_grad_by_freq", "sparse")


@dataclass
class Sample:
    """One OpInfo sample: ``op(indices, weight, **kwargs)`` (OpInfo passes the weight as ``input``)."""

    name: str
    weight: torch.Tensor
    indices: torch.Tensor
    kwargs: dict = field(default_factory=dict)

    def signature(self) -> tuple:
        """What PyTorch's generator fixes about this sample (its values are random)."""
        kw = []
        for key in sorted(self.kwargs):
            v = self.kwargs[key]
            if key == "offsets":
                v = tuple(v.tolist())
            elif isinstance(v, torch.Tensor):
                v = ("tensor", tuple(v.shape), str(v.dtype), v.requires_grad)
            kw.append((key, v))
        return (tuple(self.weight.shape), str(self.weight.dtype), self.weight.requires_grad,
                tuple(self.indices.shape), str(self.indices.dtype), self.indices.is_contiguous(), tuple(kw))


def _seeded(seed):
    """Run the generator with its own fixed seed, leaving torch's global generator untouched."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return list(fn(*args, **kwargs))

        return run

    return wrap


@functools.lru_cache(maxsize=None)
@_seeded(12)
def embedding_samples(dtype, requires_grad):
    """``sample_inputs_embedding`` (device "cpu"), each sample named."""
    device = "cpu"

    def make_input(shape):
        return make_tensor(shape, device=device, dtype=dtype, requires_grad=requires_grad)

    def make_long_input(shape, *, low, high):
        return make_tensor(shape, device=device, dtype=torch.long, low=low, high=high)

    # 0-D index tensor
    idx = make_long_input((), low=0, high=M)
    yield Sample("0d_index", make_input((M, S)), idx)

    # 1-D index tensor
    idx = make_long_input((S,), low=0, high=M)
    yield Sample("1d_index", make_input((M, S)), idx)

    # 2-D index tensor
    idx = make_long_input((S, S), low=0, high=M)
    yield Sample("2d_index", make_input((M, S)), idx)

    if not requires_grad:
        # The gradient vector at `padding_idx` is not updated.
        idx = make_long_input((2, 2), low=0, high=S)
        idx[0, 0] = 2
        idx[1, 1] = 2
        yield Sample("padding_idx_2", make_input((S, S)), idx, {"padding_idx": 2})

        idx = make_long_input((2, 2), low=0, high=S)
        idx[0, 0] = 4
        idx[1, 1] = 4
        yield Sample("padding_idx_minus_1", make_input((S, S)), idx, {"padding_idx": -1})

        # Due to inplace renorming of weight, the numerical gradient doesn't match the analytical gradient.
        idx = make_long_input((2, 2), low=0, high=S)
        weights = make_input((S, S)) * 2
        yield Sample("max_norm", weights, idx, {"max_norm": 1.0})

        idx = make_long_input((2, 2), low=0, high=S)
        weights = make_input((S, S)) * 2
        yield Sample("max_norm_norm_type_1", weights, idx, {"max_norm": 1.0, "norm_type": 1.0})

        # Scale the gradient based on the inverse frequency of a particular index.
        idx = make_long_input((2, 2), low=0, high=S)
        idx[0, 0] = 1
        idx[0, 1] = 1
        weights = make_input((S, S))
        yield Sample("scale_grad_by_freq", weights, idx, {"scale_grad_by_freq": True})

        # gradcheck not implemented for sparse tensors.
        idx = make_long_input((2, 2), low=0, high=S)
        weights = make_input((S, S))
        yield Sample("sparse", weights, idx, {"sparse": True})

        idx = make_long_input((3, 3), low=0, high=S)
        idx[0, 0] = 1  # freq more than 1
        idx[0, 1] = 1  # freq more than 1
        idx[1, 0] = 0  # padding_idx
        weights = make_input((S, S)) * 2
        yield Sample("sparse_scale_grad_by_freq_padding_idx_max_norm", weights, idx,
                     {"sparse": True, "scale_grad_by_freq": True, "padding_idx": 0, "max_norm": 1.0})


@functools.lru_cache(maxsize=None)
@_seeded(13)
def embedding_bag_samples(dtype, requires_grad):
    """``sample_inputs_embedding_bag`` (device "cpu"), each sample named."""
    device = "cpu"

    def make_input(shape):
        return make_tensor(shape, device=device, dtype=dtype, requires_grad=requires_grad)

    def make_long_input(shape, *, low, high, noncontiguous=False):
        return make_tensor(shape, device=device, dtype=torch.long, low=low, high=high, noncontiguous=noncontiguous)

    def make_per_sample_weight(flag, idx):
        # a tensor of float / double weights, or None to indicate all weights should be taken to be 1
        if flag:
            return make_input(idx.shape)
        return None

    offsets = torch.tensor([0, 3], device=device, dtype=torch.long)
    for generate_per_sample_weight in (True, False):
        for mode in ("sum", "mean", "max"):
            # per_sample_weights is only supported for mode='sum' (got mode='****')
            if generate_per_sample_weight and mode in ("mean", "max"):
                continue
            tag = f"{mode}{'_psw' if generate_per_sample_weight else ''}"

            # 1-D index tensor
            idx = make_long_input((S,), low=0, high=M)
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_1d", make_input((M, S)), idx,
                         {"offsets": offsets, "mode": mode, "per_sample_weights": per_sample_weights})

            idx = make_long_input((S,), low=0, high=M, noncontiguous=True)
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_1d_noncontiguous", make_input((M, S)), idx,
                         {"offsets": offsets, "mode": mode, "per_sample_weights": per_sample_weights})

            # bag with zero length
            idx = make_long_input((S,), low=0, high=M, noncontiguous=True)
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_empty_bag", make_input((M, S)), idx,
                         {"offsets": torch.tensor([0, 0, 3], device=device, dtype=torch.long), "mode": mode,
                          "per_sample_weights": per_sample_weights})

            # 2-D index tensor
            idx = make_long_input((S, S), low=0, high=M)
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_2d", make_input((M, S)), idx,
                         {"mode": mode, "per_sample_weights": per_sample_weights})

            idx = make_long_input((S, S), low=0, high=M, noncontiguous=True)
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_2d_noncontiguous", make_input((M, S)), idx,
                         {"mode": mode, "per_sample_weights": per_sample_weights})

            # The gradient vector at `padding_idx` is not updated.
            # Negative padding_idx
            idx = make_long_input((6,), low=0, high=S)
            idx[0] = 4
            idx[4] = 4
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_padding_idx_minus_1", make_input((S, S)), idx,
                         {"padding_idx": -1, "offsets": offsets, "mode": mode,
                          "per_sample_weights": per_sample_weights})

            idx = make_long_input((3, 3), low=0, high=S)
            # Positive padding_idx
            idx[0, 0] = 2
            idx[1, 1] = 2
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
            yield Sample(f"{tag}_padding_idx_2", make_input((S, S)), idx,
                         {"padding_idx": 2, "mode": mode, "per_sample_weights": per_sample_weights})

            idx = make_long_input((6,), low=0, high=S)
            weights = make_input((S, S))
            offsets_ = torch.tensor([0, 3, 6], device=device, dtype=torch.long)
            # made but not passed, as in PyTorch (it draws from the generator all the same)
            per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)  # noqa: F841
            yield Sample(f"{tag}_include_last_offset", weights, idx,
                         {"mode": mode, "offsets": offsets_, "include_last_offset": True})

            if not requires_grad:
                # Due to inplace renorming of weight, the numerical gradient doesn't match the analytical gradient.
                idx = make_long_input((2, 2), low=0, high=S)
                weights = make_input((S, S)) * 2
                per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
                yield Sample(f"{tag}_max_norm", weights, idx,
                             {"max_norm": 1.0, "mode": mode, "per_sample_weights": per_sample_weights})

                idx = make_long_input((6,), low=0, high=S)
                weights = make_input((S, S)) * 2
                per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
                yield Sample(f"{tag}_max_norm_norm_type_1", weights, idx,
                             {"max_norm": 1.0, "norm_type": 1.0, "mode": mode, "offsets": offsets,
                              "per_sample_weights": per_sample_weights})

                if mode != "max":
                    # Scale the gradient based on the inverse frequency of a particular index.
                    # Note : smax mode does not support sparse weights
                    idx = make_long_input((2, 2), low=0, high=S)
                    idx[0, 0] = 1
                    idx[0, 1] = 1
                    weights = make_input((S, S))
                    per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
                    yield Sample(f"{tag}_scale_grad_by_freq", weights, idx,
                                 {"scale_grad_by_freq": True, "mode": mode, "per_sample_weights": per_sample_weights})

                    # gradcheck not implemented for sparse tensors.
                    # Note : max mode does not support sparse weights
                    idx = make_long_input((6,), low=0, high=S)
                    weights = make_input((S, S))
                    per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
                    yield Sample(f"{tag}_sparse", weights, idx,
                                 {"sparse": True, "offsets": offsets, "mode": mode,
                                  "per_sample_weights": per_sample_weights})

                    idx = make_long_input((6,), low=0, high=S)
                    idx[0] = 1  # freq more than 1
                    idx[1] = 1  # freq more than 1
                    idx[3] = 0  # padding_idx
                    weights = make_input((S, S)) * 2
                    per_sample_weights = make_per_sample_weight(generate_per_sample_weight, idx)
                    yield Sample(f"{tag}_sparse_scale_grad_by_freq_padding_idx_max_norm", weights, idx,
                                 {"sparse": True, "scale_grad_by_freq": True, "padding_idx": 0, "max_norm": 1.0,
                                  "offsets": offsets, "mode": mode, "per_sample_weights": per_sample_weights})


@_seeded(14)
def embedding_error_inputs():
    """``error_inputs_embedding``: ``(weight, indices, PyTorch's error type, its message regex)``."""
    device = "cpu"
    indices = torch.rand(2, 2, device=device).long()
    weights = [
        torch.tensor(1.0, device=device),
        torch.tensor(1.0, device=device).reshape(1, 1, 1),
    ]
    for weight in weights:
        yield weight, indices, RuntimeError, "'weight' must be 2-D"


def noncontiguous_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.testing._internal.common_utils.noncontiguous_like``: the same values, every other element."""
    if not t.is_contiguous():
        return t
    if t.dtype.is_floating_point or t.dtype.is_complex:
        value = math.nan
    elif t.dtype == torch.bool:
        value = True
    else:
        value = 12
    result = t.new_empty(t.shape + (2,))
    result[..., 0] = value
    result[..., 1] = t.detach()
    result = result[..., 1]
    result.requires_grad_(t.requires_grad)
    return result


def embedding_bag_reference_impl(input, weight, offsets=None, mode="sum", per_sample_weights=None,
                                 include_last_offset=False):
    """``TestEmbeddingNNDeviceType._embedding_bag_reference_impl`` of ``test/nn/test_embedding.py``."""
    assert mode == "sum" or per_sample_weights is None
    assert offsets is not None
    if per_sample_weights is None:
        per_sample_weights = torch.ones(input.size()).to(dtype=weight.dtype, device=weight.device)
    assert input.numel() == per_sample_weights.numel()

    bags = []
    long_input = input.to(torch.long)
    embeddings = weight.index_select(0, long_input) * per_sample_weights.unsqueeze(1)
    if include_last_offset:
        ends = [(offsets[i], offsets[i + 1]) for i in range(len(offsets) - 1)]
    else:
        ends = [(offset, offsets[i + 1] if i + 1 < len(offsets) else len(long_input))
                for i, offset in enumerate(offsets)]
    for offset, next_offset in ends:
        length = next_offset - offset
        if length == 0:
            bags.append(torch.tensor([0] * weight.size(1)).to(dtype=embeddings.dtype, device=embeddings.device))
        elif mode == "sum":
            bags.append(embeddings.narrow(0, offset, length).sum(0))
        elif mode == "mean":
            bags.append(embeddings.narrow(0, offset, length).sum(0).div(length))
        else:
            assert mode == "max"
            bags.append(embeddings.narrow(0, offset, length).max(0)[0])
    return torch.stack(bags)


#: run by ``test_opinfo_port_matches_pytorch`` in a child process: PyTorch's own generators' signatures
PYTORCH_SIGNATURES_SCRIPT = r"""
import json, sys, types, unittest
try:
    import expecttest  # noqa: F401  (PyTorch's test-only dependency)
except ImportError:  # common_utils only subclasses expecttest.TestCase: a stand-in is enough here
    stub = types.ModuleType("expecttest")
    stub.TestCase = unittest.TestCase
    sys.modules["expecttest"] = stub
import torch
from torch.testing._internal.common_methods_invocations import op_db, S, M
sys.path.insert(0, sys.argv[1])
from pytorch_cases import Sample

out = {"S": S, "M": M}
for op in op_db:
    if op.name not in ("nn.functional.embedding", "nn.functional.embedding_bag"):
        continue
    out[op.name + ":dtypes"] = sorted(str(d) for d in op.supported_dtypes("cpu"))
    for dtype in (torch.float32, torch.float16):
        for rg in (True, False):
            sigs = []
            for s in op.sample_inputs("cpu", dtype, requires_grad=rg):
                sigs.append(repr(Sample("", s.input, s.args[0], dict(s.kwargs)).signature()))
            out[f"{op.name}:{dtype}:{rg}"] = sigs
    if op.error_inputs_func is not None:
        out[op.name + ":errors"] = [
            [list(e.sample_input.input.shape), list(e.sample_input.args[0].shape), e.error_type.__name__, e.error_regex]
            for e in op.error_inputs("cpu")]
print(json.dumps(out))
"""
