"""The real Fashion-MNIST, where Debian's dataset-fashion-mnist package installed it."""

import gzip
import hashlib
import math
from pathlib import Path

import pytest

from reslab.data import fetch, load_dataset
from reslab.data.idx import FASHION_MNIST_SHA256

SYSTEM = Path("/usr/share/datasets")
pytestmark = pytest.mark.skipif(not (SYSTEM / "fashion-mnist").is_dir(),
                                reason="dataset-fashion-mnist is not installed")


def test_real_files_counts_checksums_and_statistics(monkeypatch):
    monkeypatch.setattr(fetch, "SYSTEM_DIRS", (SYSTEM,))
    data = load_dataset("fashion-mnist", val_size=0)
    assert data.source.location == SYSTEM / "fashion-mnist"
    assert data.source.verification == "SHA-256 verified"
    assert data.train.images.shape == (60_000, 1, 28, 28)
    assert data.test.images.shape == (10_000, 1, 28, 28)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert data.train.labels.bincount().tolist() == [6000] * 10
    assert data.test.labels.bincount().tolist() == [1000] * 10
    assert math.isclose(data.mean[0], 0.286041, abs_tol=1e-6)
    assert math.isclose(data.std[0], 0.353024, abs_tol=1e-6)


def test_published_checksums_match_the_installed_files():
    for name, expected in FASHION_MNIST_SHA256.items():
        path = SYSTEM / "fashion-mnist" / f"{name}.gz"
        if not path.exists():
            path = path.with_suffix("")
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected, name
