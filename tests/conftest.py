"""Small learnable data for training tests: each class is a bright square at its own place."""

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from reslab.data import Dataset, SourceInfo, Split, channel_stats


def synthetic_images(n: int, side: int = 16, channels: int = 1, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 60, (n, channels, side, side), generator=generator)
    cell = side // 4
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 4)
        images[i, :, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] += 180
    return images.clamp(0, 255).to(torch.uint8), labels


def synthetic_dataset(n_train=400, n_val=100, n_test=100, side=16) -> Dataset:
    train = Split(*synthetic_images(n_train, side, seed=1))
    val = Split(*synthetic_images(n_val, side, seed=2))
    test = Split(*synthetic_images(n_test, side, seed=3))
    mean, std = channel_stats(train.images)
    return Dataset(name="synthetic", train=train, val=val, test=test,
                   classes=tuple(f"class{i}" for i in range(10)), mean=mean, std=std,
                   source=SourceInfo(location=None, verification="generated", downloaded=False,
                                     val_origin="generated", skipped=()))


@pytest.fixture
def tiny_data() -> Dataset:
    return synthetic_dataset()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """The same data as PNG files in train/ and test/ class folders (for subprocess runs)."""
    root = tmp_path_factory.mktemp("folder")
    for split, n, seed in (("train", 300, 1), ("test", 60, 3)):
        images, labels = synthetic_images(n, 16, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i}.png")
    return root


CHECKOUT = Path(__file__).resolve().parent.parent
_BEFORE: set[str] = set()
_CACHES = {".pytest_cache", ".hypothesis", "__pycache__", ".ruff_cache"}


def pytest_sessionstart(session):
    _BEFORE.update(p.name for p in CHECKOUT.iterdir())


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves nothing in the checkout (a runs/ folder, a stray PNG...)."""
    left = sorted({p.name for p in CHECKOUT.iterdir()} - _BEFORE - _CACHES)
    if left:
        print(f"\nthe test suite left {', '.join(left)} in {CHECKOUT}", file=sys.stderr)
        session.exitstatus = 1
