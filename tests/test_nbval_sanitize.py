"""tests/nbval_sanitize.cfg: what varies between runs is masked, and nothing else is."""
from __future__ import annotations

import configparser
import re

import pytest
from nbval.plugin import get_sanitize_patterns

from conftest import ROOT

CFG = ROOT / "tests" / "nbval_sanitize.cfg"


def sanitize(text: str) -> str:
    """What nbval does: every (regex, replace) pair in file order, with re.sub."""
    for regex, replace in get_sanitize_patterns(CFG.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def test_every_section_is_read_by_nbval():
    """nbval parses the file with a line regex; a section it cannot read would silently do nothing."""
    parser = configparser.ConfigParser()
    parser.read(CFG, encoding="utf-8")
    pairs = get_sanitize_patterns(CFG.read_text(encoding="utf-8"))
    assert len(pairs) == len(parser.sections()) > 0
    for section in parser.sections():
        assert set(parser[section]) == {"regex", "replace"}, section
    for regex, _ in pairs:
        re.compile(regex)


# pairs of outputs from two runs (or two machines) that must compare equal after sanitizing
SAME = [
    ("1.23 ms ± 45.6 µs per loop (mean ± std. dev. of 7 runs, 1,000 loops each)",
     "987 µs ± 2.1 μs per loop (mean ± std. dev. of 7 runs, 10 loops each)"),
    ("CPU times: user 12.3 s, sys: 40 ms, total: 12.34 s\nWall time: 850 ns",
     "CPU times: user 1min 2s, sys: 3.1 ms, total: 4.5 s\nWall time: 21 us"),
    ("lookup: 21 us, one-hot: 2.7 ms (127x)", "lookup: 30.5 us, one-hot: 269 ms (127x)"),
    ("took 3.1e-05 s", "took 0.5 seconds"),
    ("100%|██████████| 50/50 [00:01<00:00, 45.23it/s]", "100%|██████████| 50/50 [01:02<00:00,  1.2kit/s]"),
    ("epoch 3: 100%|█████| 10/10 [00:10<00:00,  1.05s/it, loss=0.891]",
     "epoch 3: 100%|█████| 10/10 [00:00<00:00, 250.00it/s, loss=0.891]"),
    (" 0%|          | 0/10 [00:00<?, ?it/s]", " 0%|          | 0/10 [00:03<?, ?it/s]"),
    ("<function f at 0x7f3a2c1b5e50>", "<function f at 0x10a2b3c40>"),
    ("[<matplotlib.lines.Line2D at 0x7f0012ab34cd>]", "[<matplotlib.lines.Line2D at 0x55d0c0ffee00>]"),
    ("data_ptr=0x7f12ab34cd00", "data_ptr=0x7f98ee001200"),
    ("tensor([1., 2.], device='cuda:0')", "tensor([1., 2.])"),
    ("tensor([[0.5000, 1.0000]], device='cuda:0', grad_fn=<EmbeddingBackward0>)",
     "tensor([[0.5000, 1.0000]], grad_fn=<EmbeddingBackward0>)"),
    ("device(type='cuda', index=0)", "device(type='cpu')"),
    ("Using device: cuda:0", "Using device: cpu"),
    ("running on cuda", "running on cpu"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"),
    ("GPU: NVIDIA H100 80GB HBM3, 132 SMs", "GPU: Tesla T4, 132 SMs"),
    ("torch 2.13.0+cpu", "torch 2.13.0+cu130"),
    ("copy: 2,970 GB/s, lookup: 783 GB/s", "copy: 1,002.5 GB/s, lookup: 55 GB/s"),
    ("the lookup was 41,912 times faster", "the lookup was 0 times faster"),
    ("per index, 1.9 times as long as a batch of 4,096", "per index, 0.7 times as long as a batch of 4,096"),
    ("consecutive rows ran 1.3 times as fast", "consecutive rows ran 0.9 times as fast"),
    ("gradient of el.lookup vs el.lookup_backward: max |difference| 0.00e+00, below 1e-06: True",
     "gradient of el.lookup vs el.lookup_backward: max |difference| 5.96e-08, below 1e-06: True"),
    ("sum, padding_idx   outputs |difference| 2.98e-07   gradients |difference| 0.00e+00",
     "sum, padding_idx   outputs |difference| 0.00e+00   gradients |difference| 1.19e-07"),
]


@pytest.mark.parametrize("a,b", SAME)
def test_varying_parts_are_masked(a, b):
    assert a != b
    assert sanitize(a) == sanitize(b), (sanitize(a), sanitize(b))


# outputs whose every character matters: they must come out unchanged
UNCHANGED = [
    "array([[0.12573022, -0.13210486],\n       [ 0.64042265,  0.10490012]], dtype=float32)",
    "tensor([[ 0.1257, -0.1321]])",
    "(300000,) 299999 zeros, 1 one",
    "one-hot batch of 1,024 rows: 1,228,800,000 bytes (1.14 GiB)",
    "test RMSE 0.886 after 20 epochs; 12 samples, 3 steps, 671 users, 9066 movies",
    "Neighbors(indices=array([3, 7, 1]), scores=array([0.91, 0.85, 0.80], dtype=float32))",
    "hash_bucket('fireweed', 1000) = 413; bucket 0x1f",
    "3.8 times the limit, 2.6 times larger, 4 times as many rows",
    "IndexError: index 42 is out of range for num_embeddings=13",
    "weight shape (9066, 12), dtype float32, 4 bytes per entry",
    "int64s and float32s",
    "The CPU and the GPU agree.",
    "{'mode': 'sum', 'padding_idx': 0}",
    "largest difference, el.lookup against F.embedding: 0.0",
    "every difference below 1e-06: True",
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_stable_outputs_are_left_alone(text):
    assert sanitize(text) == text


def test_a_rounding_difference_masks_the_digits_but_not_the_verdict():
    """Chapter 5 prints `max |difference| 5.96e-08, below 1e-06: True`: the bound's answer stays compared."""
    within = "max |difference| 5.96e-08, below 1e-06: True"
    beyond = "max |difference| 3.10e-05, below 1e-06: False"
    assert sanitize(within) != sanitize(beyond)
    assert sanitize(within) == "max |difference| DIFF, below 1e-06: True"


MASKS = ("TIME", "BANDWIDTH", "RATIO", "DIFF", "RATE")


@pytest.mark.parametrize("notebook", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda p: p.name)
def test_masked_numbers_are_not_padded_in_stored_outputs(notebook):
    """A masked number printed with a field width (`{t:6.1f} GB/s`) leaves padding behind that depends on
    how many digits the number had, so a run that measures 9.8 where the stored run measured 10.2 would
    differ after masking. Masked numbers must be printed without padding."""
    import json

    padded = re.compile(r"(?:(?<=\S) {2,}|^ +)(?:" + "|".join(MASKS) + r")\b", re.M)
    found = []
    for number, cell in enumerate(json.loads(notebook.read_text(encoding="utf-8"))["cells"]):
        for out in cell.get("outputs", []):
            text = out.get("text") if out["output_type"] == "stream" else out.get("data", {}).get("text/plain")
            for match in padded.finditer(sanitize("".join(text or ""))):
                found.append(f"cell {number}: {match.group(0)!r}")
    assert not found, found
