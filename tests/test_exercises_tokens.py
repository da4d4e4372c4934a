"""Checkers of chapter 12 (embedlib/exercises/tokens.py): right answers pass, classic mistakes get their hint."""
import numpy as np
import pytest
import torch

from embedlib import numpy as elnp
from embedlib.exercises import CheckResult, check_image_patches, check_sinusoidal_positions
from embedlib.exercises.tokens import _image_patches, _sinusoidal_positions


# --- sinusoidal positions -------------------------------------------------------------------------

def sinusoidal(num_positions, dim):
    angles = np.arange(num_positions)[:, None] * 10000.0 ** (-np.arange(0, dim, 2) / dim)
    table = np.zeros((num_positions, dim))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


def sinusoidal_torch(num_positions, dim):
    # a reader may answer in torch, in float32
    j = torch.arange(0, dim, 2, dtype=torch.float64)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * 10000.0 ** (-j / dim)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(num_positions, dim).float()


def sines_first(num_positions, dim):
    table = sinusoidal(num_positions, dim)
    return np.concatenate([table[:, 0::2], table[:, 1::2]], axis=1)


def swapped(num_positions, dim):
    table = sinusoidal(num_positions, dim)
    out = table.copy()
    out[:, 0::2], out[:, 1::2] = table[:, 1::2], table[:, 0::2]
    return out


def wrong_frequencies(num_positions, dim):
    angles = np.arange(num_positions)[:, None] * 10000.0 ** (-np.arange(dim // 2) / dim)
    table = np.zeros((num_positions, dim))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


def test_reference_is_the_library():
    for n, d in [(1, 2), (7, 6), (300, 64)]:
        np.testing.assert_allclose(_sinusoidal_positions(n, d), elnp.sinusoidal_positions(n, d, dtype=np.float64),
                                   atol=1e-9)


@pytest.mark.parametrize("fn", [sinusoidal, sinusoidal_torch])
def test_right_sinusoidal_positions_pass(fn):
    result = check_sinusoidal_positions(fn)
    assert result, repr(result)
    assert isinstance(result, CheckResult)
    assert repr(result).startswith(f"✓ {fn.__name__} passed all {result.cases_total} hidden cases")


@pytest.mark.parametrize("wrong, hint", [
    (sines_first, "must alternate"),
    (swapped, "swapped"),
    (wrong_frequencies, "check the frequencies"),
    (lambda n, d: sinusoidal(n, d).T, "transpose"),
])
def test_sinusoidal_mistakes_get_their_hint(wrong, hint):
    result = check_sinusoidal_positions(wrong)
    assert not result
    assert hint in repr(result), repr(result)


# --- image patches --------------------------------------------------------------------------------

def patches(images, size):
    b, c, h, w = images.shape
    split = images.reshape(b, c, h // size, size, w // size, size)
    return split.transpose(0, 2, 4, 1, 3, 5).reshape(b, (h // size) * (w // size), c * size * size)


def patches_by_unfold(images, size):
    # torch's unfold gives (B, C*size*size, L): the same patches, transposed
    return torch.nn.functional.unfold(torch.from_numpy(images), size, stride=size).transpose(1, 2)


def plain_reshape(images, size):
    b, c, h, w = images.shape
    return images.reshape(b, (h // size) * (w // size), c * size * size)


def channel_last(images, size):
    b, c, h, w = images.shape
    split = images.reshape(b, c, h // size, size, w // size, size)
    return split.transpose(0, 2, 4, 3, 5, 1).reshape(b, (h // size) * (w // size), c * size * size)


def test_patch_reference_is_the_library():
    images = np.random.default_rng(0).standard_normal((2, 3, 8, 4))
    np.testing.assert_array_equal(_image_patches(images, 2), elnp.image_patches(images, 2))


@pytest.mark.parametrize("fn", [patches, patches_by_unfold])
def test_right_image_patches_pass(fn):
    result = check_image_patches(fn)
    assert result, repr(result)


@pytest.mark.parametrize("wrong, hint", [
    (plain_reshape, "plain reshape"),
    (channel_last, "channel first"),
])
def test_patch_mistakes_get_their_hint(wrong, hint):
    result = check_image_patches(wrong)
    assert not result
    assert hint in repr(result), repr(result)
