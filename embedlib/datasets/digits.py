"""The 8 x 8 handwritten digits, shipped with embedlib (chapter 12 trains a tiny vision transformer on them).

1,797 grey-level images of the digits 0 to 9, each 8 x 8 pixels with values 0..16: the test set of
the UCI "Optical Recognition of Handwritten Digits" data (E. Alpaydin and C. Kaynak, 1998; CC BY 4.0),
as scikit-learn ships it in ``sklearn/datasets/data/digits.csv.gz``. The file is copied unchanged
into ``embedlib/datasets/data/`` (its provenance is in ``data/NOTICE``), so nothing is downloaded
and scikit-learn is not needed.
"""
from __future__ import annotations

import gzip
import hashlib
import pathlib

import numpy as np

DIGITS_FILE = pathlib.Path(__file__).with_name("data") / "digits.csv.gz"
#: SHA-256 of the file, as found in the scikit-learn 1.9.1 wheel.
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
NUM_IMAGES = 1797


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8 x 8 digits (chapter 12): ``(images, labels)``.

    ``images`` is float32 of shape (1797, 8, 8) with integer values 0..16 (the number of "on" pixels
    in each 4 x 4 block of a 32 x 32 bitmap), row-major; ``labels`` is int64 of shape (1797,), the
    digit each image shows. The file's SHA-256 is checked first (``ValueError`` if it differs).
    """
    raw = DIGITS_FILE.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != DIGITS_SHA256:
        raise ValueError(f"{DIGITS_FILE} has SHA-256 {digest}, not {DIGITS_SHA256}: the file is corrupt; "
                         "reinstall embedlib")
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    if table.shape != (NUM_IMAGES, 65):
        raise ValueError(f"{DIGITS_FILE}: expected {NUM_IMAGES} rows of 64 pixels and a label, got {table.shape}")
    return table[:, :64].astype(np.float32).reshape(-1, 8, 8), table[:, 64].copy()
