"""Shared fixtures, strategies and reference implementations for embedlib's tests.

* ``backend``: every test that applies to both backends takes this fixture; it yields a small
  :class:`Backend` object holding the module (``be.el``) and converters to and from NumPy.
* Hypothesis runs with the ``embedlib`` profile: no deadline, a fixed number of examples and
  ``derandomize=True``, so CI sees the same examples on every run. ``HYPOTHESIS_PROFILE=thorough``
  runs many more examples (still derandomized) for a local deep check.
* References (``ref_*``) are deliberately naive Python/NumPy loops in float64: slow, obviously right.
"""
from __future__ import annotations

import os
import pathlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) without `pip install -e .`
    sys.path.insert(0, str(ROOT))

settings.register_profile(
    "embedlib",
    deadline=None,
    max_examples=50,
    derandomize=True,
    database=None,  # no example replay from earlier runs: every run sees exactly the same examples
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("embedlib"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "embedlib"))

import embedlib.numpy as el_numpy  # noqa: E402
import torch  # noqa: E402

import embedlib.torch as el_torch  # noqa: E402


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One backend plus converters, so one test body serves both."""

    name: str
    el: ModuleType
    float32: Any
    float64: Any
    _to_native: Callable[[np.ndarray], Any]

    def arr(self, a) -> Any:
        """A copy of NumPy array ``a`` in this backend's array type (indices, weights, grads alike)."""
        return self._to_native(np.array(a, copy=True))

    def np(self, x) -> np.ndarray:
        """Back to NumPy (detached, on the CPU)."""
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def dtype(self, np_dtype) -> Any:
        return self.float64 if np.dtype(np_dtype) == np.float64 else self.float32

    def copy(self, x):
        return x.detach().clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)

    def is_native(self, x) -> bool:
        return isinstance(x, torch.Tensor) if self.name == "torch" else isinstance(x, np.ndarray)


NUMPY = Backend("numpy", el_numpy, np.float32, np.float64, lambda a: a)
TORCH = Backend("torch", el_torch, torch.float32, torch.float64, torch.from_numpy)
BACKENDS = [NUMPY, TORCH]


@pytest.fixture(scope="session", params=BACKENDS, ids=lambda b: b.name)
def backend(request) -> Backend:
    return request.param


def bitwise_equal(a, b) -> bool:
    """True when two arrays/tensors hold exactly the same bytes (NaN == NaN, -0.0 != 0.0)."""
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def tol(dtype) -> dict:
    """Tolerances for results that may add in a different order than the reference."""
    if np.dtype(dtype) == np.float64:
        return dict(rtol=1e-10, atol=1e-10)
    return dict(rtol=2e-5, atol=2e-5)


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------
float_dtypes = st.sampled_from([np.float32, np.float64])
#: index dtypes every backend must accept (torch tensors exist for all of these)
index_dtypes = st.sampled_from([np.int64, np.int32, np.int16, np.uint8])
#: finite values that are exact in float32, without subnormals (some BLAS flush them)
finite_values = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)


@st.composite
def weights(draw, dtype=None, min_rows=1, max_rows=12, min_dim=1, max_dim=5):
    """A (V, D) float table with arbitrary finite values (repeats, zeros and signs included)."""
    dtype = draw(float_dtypes) if dtype is None else dtype
    v = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(min_dim, max_dim))
    return draw(hnp.arrays(dtype, (v, d), elements=finite_values))


@st.composite
def random_weights(draw, dtype=None, min_rows=1, max_rows=12, min_dim=1, max_dim=5):
    """A (V, D) table of N(0, 1) values: no ties, so max-bags and neighbour orders are unambiguous."""
    dtype = draw(float_dtypes) if dtype is None else dtype
    v = draw(st.integers(min_rows, max_rows))
    d = draw(st.integers(min_dim, max_dim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.standard_normal((v, d)).astype(dtype)


def indices(num_embeddings, *, min_dims=0, max_dims=3, min_side=0, max_side=6, dtype=None):
    """Index arrays of any shape (0-d and empty included) with values in [0, num_embeddings)."""
    return hnp.arrays(
        index_dtypes if dtype is None else dtype,
        hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side),
        elements=st.integers(0, num_embeddings - 1),
    )


@st.composite
def lookup_cases(draw, random=False):
    """(indices, weight): small tables so that repeated indices are common."""
    w = draw(random_weights() if random else weights())
    idx = draw(indices(w.shape[0]))
    return idx, w


@dataclass
class BagCase:
    indices: np.ndarray
    weight: np.ndarray
    offsets: np.ndarray | None
    mode: str
    per_sample_weights: np.ndarray | None
    padding_idx: int | None
    include_last_offset: bool

    def kwargs(self, be: Backend | None = None) -> dict:
        """Keyword arguments for ``embedding_bag`` (converted to ``be`` when given)."""
        conv = (lambda a: a) if be is None else (lambda a: None if a is None else be.arr(a))
        return dict(
            mode=self.mode,
            per_sample_weights=conv(self.per_sample_weights),
            padding_idx=self.padding_idx,
            include_last_offset=self.include_last_offset,
        )


@st.composite
def bag_cases(draw, modes=("sum", "mean", "max"), two_d=None, psw=None, padding=None, last_offset=None,
              strict_last_offset=True, dtype=None, max_rows=10):
    """An ``embedding_bag`` call: 1-D indices with offsets (empty bags included) or 2-D fixed bags.

    ``strict_last_offset``: with include_last_offset, the last offset equals len(indices) (torch's
    documented use); False lets it stop earlier (the indices after it are then ignored).
    """
    w = draw(random_weights(dtype=dtype, max_rows=max_rows))
    v = w.shape[0]
    mode = draw(st.sampled_from(modes))
    two_d = draw(st.booleans()) if two_d is None else two_d
    use_psw = (mode == "sum" and draw(st.booleans())) if psw is None else (psw and mode == "sum")
    pad = draw(st.one_of(st.none(), st.integers(-v, v - 1))) if padding is None else padding
    idx_dtype = draw(st.sampled_from([np.int64, np.int32]))
    if two_d:
        b = draw(st.integers(0, 5))
        l = draw(st.integers(0, 4))
        idx = draw(hnp.arrays(idx_dtype, (b, l), elements=st.integers(0, v - 1)))
        offsets, include_last = None, False
    else:
        n = draw(st.integers(0, 15))
        idx = draw(hnp.arrays(idx_dtype, (n,), elements=st.integers(0, v - 1)))
        bags = draw(st.integers(1, 6))
        cuts = sorted(draw(st.lists(st.integers(0, n), min_size=bags - 1, max_size=bags - 1)))
        offsets = [0] + cuts
        include_last = draw(st.booleans()) if last_offset is None else last_offset
        if include_last:
            end = n if strict_last_offset else draw(st.integers(offsets[-1], n))
            offsets = offsets + [end]
        offsets = np.array(offsets, dtype=draw(st.sampled_from([np.int64, np.int32])))
    weights_ = None
    if use_psw:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        weights_ = rng.standard_normal(idx.shape).astype(w.dtype)
    return BagCase(idx, w, offsets, mode, weights_, pad, include_last)


# --------------------------------------------------------------------------------------------------
# Naive references (float64)
# --------------------------------------------------------------------------------------------------
def ref_one_hot(idx, v) -> np.ndarray:
    idx = np.asarray(idx)
    out = np.zeros(idx.shape + (v,))
    for pos in np.ndindex(idx.shape):
        out[pos + (int(idx[pos]),)] = 1.0
    return out


def ref_lookup_backward(idx, grad, v, padding_idx=None) -> np.ndarray:
    """one_hot(idx).T @ grad, by a loop over every index (repeats add up)."""
    idx = np.asarray(idx).reshape(-1)
    grad = np.asarray(grad, dtype=np.float64)
    grad = grad.reshape(len(idx), grad.shape[-1])
    out = np.zeros((v, grad.shape[1]))
    for k, i in enumerate(idx):
        out[int(i)] += grad[k]
    if padding_idx is not None:
        out[padding_idx % v] = 0
    return out


def bag_bounds(case: BagCase):
    """[(start, end)] of every bag, and the flat indices / per-sample weights."""
    idx = np.asarray(case.indices)
    psw = None if case.per_sample_weights is None else np.asarray(case.per_sample_weights).reshape(-1)
    if idx.ndim == 2:
        b, l = idx.shape
        return [(i * l, (i + 1) * l) for i in range(b)], idx.reshape(-1), psw
    off = [int(o) for o in case.offsets]
    if case.include_last_offset:
        bounds = [(off[i], off[i + 1]) for i in range(len(off) - 1)]
    else:
        bounds = [(off[i], off[i + 1] if i + 1 < len(off) else len(idx)) for i in range(len(off))]
    return bounds, idx, psw


def ref_embedding_bag(case: BagCase) -> np.ndarray:
    """A straightforward loop over bags: sum / mean / max of the non-padding rows, zeros if none."""
    w = np.asarray(case.weight, dtype=np.float64)
    v, d = w.shape
    pad = None if case.padding_idx is None else case.padding_idx % v
    bounds, idx, psw = bag_bounds(case)
    out = np.zeros((len(bounds), d))
    for b, (s, e) in enumerate(bounds):
        rows = [(j, int(idx[j])) for j in range(s, e) if int(idx[j]) != pad]
        if not rows:
            continue
        if case.mode == "max":
            out[b] = np.max([w[r] for _, r in rows], axis=0)
        else:
            total = np.zeros(d)
            for j, r in rows:
                total += w[r] * (1.0 if psw is None else float(psw[j]))
            out[b] = total / len(rows) if case.mode == "mean" else total
    return out


def ref_embedding_bag_grad(case: BagCase, grad: np.ndarray) -> np.ndarray:
    """Dense gradient of sum(out * grad) w.r.t. the weight, by the same loop."""
    w = np.asarray(case.weight, dtype=np.float64)
    v, d = w.shape
    pad = None if case.padding_idx is None else case.padding_idx % v
    bounds, idx, psw = bag_bounds(case)
    out = np.zeros((v, d))
    for b, (s, e) in enumerate(bounds):
        rows = [(j, int(idx[j])) for j in range(s, e) if int(idx[j]) != pad]
        if not rows:
            continue
        if case.mode == "max":
            for c in range(d):
                vals = [w[r, c] for _, r in rows]
                out[rows[int(np.argmax(vals))][1], c] += grad[b, c]
        else:
            for j, r in rows:
                f = 1.0 if psw is None else float(psw[j])
                out[r] += grad[b] * f / (len(rows) if case.mode == "mean" else 1)
    return out


def ref_neighbors(weight, query, k, metric):
    """Brute force: score every row in float64, sort by (best score, lower row id)."""
    w = np.asarray(weight, dtype=np.float64)
    q = np.asarray(query)
    by_id = np.issubdtype(q.dtype, np.integer)
    ids = q.reshape(-1) if by_id else None
    vecs = w[ids] if by_id else np.asarray(q, dtype=np.float64).reshape(-1, w.shape[1])
    all_idx, all_scores = [], []
    for qi, vec in enumerate(vecs):
        cands = []
        for r in range(w.shape[0]):
            if by_id and r == int(ids[qi]):
                continue
            if metric == "dot":
                s = float(vec @ w[r])
                key = -s
            elif metric == "cosine":
                s = float(vec @ w[r] / (np.linalg.norm(vec) * np.linalg.norm(w[r])))
                key = -s
            else:
                s = float(np.sqrt(((vec - w[r]) ** 2).sum()))
                key = s
            cands.append((key, r, s))
        cands.sort()
        all_idx.append([r for _, r, _ in cands[:k]])
        all_scores.append([s for _, _, s in cands[:k]])
    single = q.ndim == 0 or (not by_id and q.ndim == 1)
    if single:
        return np.array(all_idx[0]), np.array(all_scores[0])
    return np.array(all_idx).reshape(len(vecs), k), np.array(all_scores).reshape(len(vecs), k)


# --------------------------------------------------------------------------------------------------
# Notebook kernels run with a scrambled clock (tests/scrambled_clock.py)
# --------------------------------------------------------------------------------------------------
_STARTUP = """\
# Written by tests/conftest.py: every duration measured in this kernel is scaled by a random factor.
import importlib.util as _util
_spec = _util.spec_from_file_location("scrambled_clock", {path!r})
_module = _util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.install({seed!r})
del _util, _spec, _module
"""


def pytest_configure(config):
    """Share the cores among pytest-xdist's workers, and give every notebook kernel that nbval
    starts an IPython startup file that scrambles its clock.

    Workers and kernels inherit this process's environment, so both are set up once, here in the
    controller, through environment variables: the number of threads NumPy's BLAS and PyTorch may
    use (the cores divided among the workers: two workers of two threads each on two cores would
    fight over them), and an ``IPYTHONDIR`` holding the startup file.
    """
    if hasattr(config, "workerinput"):
        return
    workers = getattr(config.option, "numprocesses", None)  # an int by now; None without xdist
    if workers:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, threads)
    if os.environ.get("SCRAMBLED_CLOCK", "1") == "0":
        return
    import random
    import tempfile

    seed = os.environ.setdefault("SCRAMBLED_CLOCK_SEED", str(random.SystemRandom().randrange(2**32)))
    ipython_dir = pathlib.Path(tempfile.mkdtemp(prefix="embedlib-scrambled-clock-"))
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    module = pathlib.Path(__file__).with_name("scrambled_clock.py")
    (startup / "00-scrambled-clock.py").write_text(_STARTUP.format(path=str(module), seed=seed))
    config._scrambled_clock = (ipython_dir, os.environ.get("IPYTHONDIR"))
    os.environ["IPYTHONDIR"] = str(ipython_dir)


def pytest_unconfigure(config):
    saved = getattr(config, "_scrambled_clock", None)
    if saved is None:
        return
    import shutil

    ipython_dir, previous = saved
    if previous is None:
        os.environ.pop("IPYTHONDIR", None)
    else:
        os.environ["IPYTHONDIR"] = previous
    shutil.rmtree(ipython_dir, ignore_errors=True)


def pytest_report_header(config):
    threads = f"threads per worker: {os.environ.get('OMP_NUM_THREADS', 'default')}"
    if os.environ.get("SCRAMBLED_CLOCK", "1") == "0":
        return [threads, "notebook kernels: real clock (SCRAMBLED_CLOCK=0)"]
    return [threads, "notebook kernels: scrambled clock, every measured duration x a random factor in [1/4, 4]"
            f" (SCRAMBLED_CLOCK_SEED={os.environ.get('SCRAMBLED_CLOCK_SEED')}; SCRAMBLED_CLOCK=0 for the real one)"]
