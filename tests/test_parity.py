"""One contract, two backends: the same public names and signatures; `import embedlib` stays light."""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys

import pytest

import embedlib
from conftest import NUMPY, ROOT, TORCH

# What only the torch backend has: where a tensor lives, and the deferred bounds check (a check that
# runs on the device and reports later, to spare a GPU a host sync; NumPy's check costs no sync).
# Everything else must match.
TORCH_ONLY_PARAMETERS = {"device", "bounds_check"}
TORCH_ONLY_NAMES = {"BoundsRecord", "check_bounds"}


def public_api(module) -> set[str]:
    """Names in ``__all__`` plus every public function or class that embedlib itself defines there."""
    defined = {
        name for name, obj in vars(module).items()
        if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", "").startswith("embedlib")
    }
    return set(module.__all__) | defined


def test_all_lists_existing_names():
    for be in (NUMPY, TORCH):
        missing = [n for n in be.el.__all__ if not hasattr(be.el, n)]
        assert not missing, f"embedlib.{be.name}.__all__ names missing attributes: {missing}"
        assert len(set(be.el.__all__)) == len(be.el.__all__)


def test_backends_expose_the_same_names():
    np_names, torch_names = public_api(NUMPY.el), public_api(TORCH.el) - TORCH_ONLY_NAMES
    assert TORCH_ONLY_NAMES <= set(TORCH.el.__all__)
    assert np_names == torch_names, (
        f"only in embedlib.numpy: {sorted(np_names - torch_names)}; "
        f"only in embedlib.torch: {sorted(torch_names - np_names)}"
    )
    assert set(NUMPY.el.__all__) == set(TORCH.el.__all__) - TORCH_ONLY_NAMES


def test_every_public_name_of_the_guide_exists():
    guide = {"one_hot", "onehot_matmul", "lookup", "lookup_backward", "embedding_bag", "Embedding",
             "EmbeddingBag", "hash_bucket", "nearest_neighbors", "renorm_"}
    for be in (NUMPY, TORCH):
        assert guide <= set(be.el.__all__), sorted(guide - set(be.el.__all__))


def _parameters(obj):
    """{name: (kind, default)} of the explicit parameters, and whether **kwargs absorbs others."""
    params = inspect.signature(obj).parameters.values()
    explicit = {p.name: (p.kind, _comparable(p.name, p.default)) for p in params
                if p.name not in TORCH_ONLY_PARAMETERS and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return explicit, any(p.kind == p.VAR_KEYWORD for p in params)


def _comparable(name, default):
    """Defaults compared by meaning: dtypes by name only (np.float32 vs torch.float32 / None)."""
    if name == "dtype":
        return "<dtype>"
    return default if isinstance(default, (int, float, str, bool, type(None))) else "<object>"


def _callables():
    names = sorted(set(NUMPY.el.__all__) & set(TORCH.el.__all__))
    return [n for n in names if callable(getattr(NUMPY.el, n))]


def _same_signature(a, b, what):
    (pa, kw_a), (pb, kw_b) = _parameters(a), _parameters(b)
    for name in set(pa) & set(pb):
        assert pa[name] == pb[name], f"{what}: parameter {name!r} differs: numpy {pa[name]}, torch {pb[name]}"
    assert kw_b or not set(pa) - set(pb), f"{what}: torch lacks {sorted(set(pa) - set(pb))}"
    assert kw_a or not set(pb) - set(pa), f"{what}: numpy lacks {sorted(set(pb) - set(pa))}"
    order_a = [n for n in pa if n in pb]
    order_b = [n for n in pb if n in pa]
    assert order_a == order_b, f"{what}: parameter order differs"


@pytest.mark.parametrize("name", _callables())
def test_same_signatures(name):
    a, b = getattr(NUMPY.el, name), getattr(TORCH.el, name)
    if inspect.isclass(a) and hasattr(a, "_fields"):  # NamedTuples: same fields
        assert a._fields == b._fields
        return
    _same_signature(a, b, name)
    if inspect.isclass(a) and hasattr(a, "from_weight"):
        _same_signature(a.from_weight, b.from_weight, f"{name}.from_weight")


def test_bag_from_weight_takes_every_bag_option():
    import numpy as np
    import torch

    for be, w in ((NUMPY, np.ones((4, 2), dtype=np.float32)), (TORCH, torch.ones(4, 2))):
        layer = be.el.EmbeddingBag.from_weight(w, mode="sum", padding_idx=1, max_norm=2.0, norm_type=1.0,
                                               include_last_offset=True)
        assert (layer.mode, layer.padding_idx, layer.max_norm, layer.include_last_offset) == ("sum", 1, 2.0, True)
        out = layer(be.arr(np.array([0, 1, 2])), be.arr(np.array([0, 1, 3])))
        np.testing.assert_array_equal(be.np(out), [[1.0, 1.0], [1.0, 1.0]])


@pytest.mark.parametrize("name", _callables())
def test_docstrings_say_where_it_is_derived(name):
    """Every public function and class has a docstring naming the chapter that explains it."""
    for be in (NUMPY, TORCH):
        obj = getattr(be.el, name)
        module_doc = inspect.getdoc(sys.modules[obj.__module__]) or ""
        doc = (inspect.getdoc(obj) or "") + module_doc
        assert inspect.getdoc(obj), f"embedlib.{be.name}.{name} has no docstring"
        assert re.search(r"(?i)chapter", doc), f"embedlib.{be.name}.{name}: no chapter named in its docstrings"


def _fresh_python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_embedlib_does_not_import_torch():
    out = _fresh_python("import sys, json, embedlib; print(json.dumps(sorted(m for m in sys.modules "
                        "if m == 'torch' or m.startswith('torch.'))))")
    assert json.loads(out) == []


def test_import_embedlib_numpy_does_not_import_torch():
    """The NumPy backend is for readers without PyTorch: importing it must not need torch."""
    out = _fresh_python("import sys, json; from embedlib import numpy as el; el.lookup([0], [[1.0]]); "
                        "print(json.dumps('torch' in sys.modules))")
    assert json.loads(out) is False


def test_torch_backend_imports_in_a_fresh_process():
    out = _fresh_python("from embedlib import torch as el; import torch; "
                        "print(el.lookup(torch.tensor([1]), torch.eye(2)).tolist())")
    assert json.loads(out) == [[0.0, 1.0]]


def test_version():
    assert isinstance(embedlib.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[.+-]?\w+)*", embedlib.__version__)
    from embedlib._version import __version__

    assert embedlib.__version__ == __version__


# --------------------------------------------------------------------------------------------------
# Imports only point down: operations (checks, plans) above their kernels
# --------------------------------------------------------------------------------------------------
#: embedlib.torch's modules from the bottom up: each may import only modules listed before it
#: (and anything outside embedlib.torch). The kernels know nothing of the operations that call them.
TORCH_LAYERS = [
    ("embedlib.torch._tensors",),
    ("embedlib.torch.bounds",),
    ("embedlib.torch._triton",),  # the package and every module under it
    ("embedlib.torch.lookup", "embedlib.torch.renorm"),
    ("embedlib.torch.bag",),
    ("embedlib.torch.layers",),
]


def _imported_modules(path, module: str) -> set[str]:
    """Every module that the file imports, anywhere in it (function bodies too), relative imports
    resolved; ``from package import name`` counts as importing ``package.name`` too."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _torch_modules():
    root = ROOT / "embedlib" / "torch"
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, module


def _layer(module: str):
    for rank, names in enumerate(TORCH_LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return rank
    return None


def test_the_import_direction_helper_sees_every_kind_of_import(tmp_path):
    path = tmp_path / "__init__.py"
    path.write_text("import embedlib.torch.bag\nfrom embedlib.torch import lookup\n"
                    "def f():\n    from .. import layers\n    from ..bag import check\n")
    found = _imported_modules(path, "embedlib.torch._triton")
    assert {"embedlib.torch.bag", "embedlib.torch.lookup", "embedlib.torch.layers",
            "embedlib.torch.bag.check"} <= found


def test_triton_kernels_never_import_the_operations_that_call_them():
    """``embedlib.torch._triton`` takes checked arguments and imports nothing from the operations
    (bag, lookup, layers) or the package that gathers them: no import circle."""
    modules = [(p, m) for p, m in _torch_modules() if m.startswith("embedlib.torch._triton")]
    assert len(modules) >= 3
    for path, module in modules:
        found = _imported_modules(path, module)
        upward = {m for m in found if m in ("embedlib", "embedlib.torch")
                  or (m.startswith("embedlib.torch.") and not m.startswith("embedlib.torch._triton"))}
        assert not upward, f"{module} imports {sorted(upward)}"


def test_embedlib_torch_imports_only_point_down():
    """Each module of the ladder imports only modules below it (lookup and renorm are one rung)."""
    checked = 0
    for path, module in _torch_modules():
        rank = _layer(module)
        if rank is None:
            continue
        checked += 1
        for imported in _imported_modules(path, module):
            other = _layer(imported)
            same_package = rank == other and module.startswith("embedlib.torch._triton")
            assert other is None or other < rank or same_package or imported == module, \
                f"{module} imports {imported}, which is not below it"
    assert checked >= 7
