"""Shared pieces of the user-path matrix: tiny data in every format a user gives reslab, the
command line run as typed (in-process, or as a process where a signal or exit code matters),
and an environment where nothing outside the test's folders is read.

Fashion-MNIST and MNIST are written as IDX files of learnable images (each class a bright
square at its own place: ``tests/conftest.synthetic_images`` at 28x28); their SHA-256 and
the split counts are made the expected ones for each test (in-process) or by ``run_cli.py``
(in a process), as ``tests/data``'s ``make_fashion`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from reslab.cli import main
from reslab.data import fetch, idx

from ..conftest import synthetic_images
from ..data.conftest import cifar_members, closed_port_url, idx_bytes, write_files

RUN_CLI = str(Path(__file__).with_name("run_cli.py"))
N_TRAIN, N_TEST = 120, 40  # IDX images per split: the counts checked are made these
URL_ENVS = ("RESLAB_FASHION_MNIST_URL", "RESLAB_MNIST_URL", "RESLAB_CIFAR_URL")


def _idx_files(folder: Path, seed: int, gz: bool) -> dict[str, str]:
    """Four IDX files of 28x28 synthetic images; returns their SHA-256 (decompressed)."""
    train, train_labels = synthetic_images(N_TRAIN, 28, seed=seed)
    test, test_labels = synthetic_images(N_TEST, 28, seed=seed + 1)
    # labels in another order per data set: MNIST's files equal to Fashion-MNIST's are refused
    shift = seed // 10
    train, train_labels = train.roll(shift, 0), train_labels.roll(shift, 0)
    test, test_labels = test.roll(shift, 0), test_labels.roll(shift, 0)
    contents = {
        "train-images-idx3-ubyte": idx_bytes(train[:, 0].numpy()),
        "train-labels-idx1-ubyte": idx_bytes(train_labels.numpy()),
        "t10k-images-idx3-ubyte": idx_bytes(test[:, 0].numpy()),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels.numpy()),
    }
    write_files(folder, contents, gz)
    return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


def _image_folder(root: Path, channels: int, with_test: bool) -> Path:
    splits = [("train", 120, 1)] + ([("test", 30, 3)] if with_test else [])
    mode = "L" if channels == 1 else "RGB"
    for split, n, seed in splits:
        images, labels = synthetic_images(n, 16, channels=channels, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            array = image[0] if channels == 1 else image.permute(1, 2, 0)
            Image.fromarray(array.numpy(), mode=mode).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> dict:
    """Every data kind on disk once per session, and the tables that make the IDX ones pass."""
    root = tmp_path_factory.mktemp("paths-data")
    sha = _idx_files(root / "fashion-mnist", seed=10, gz=True)
    _idx_files(root / "mnist", seed=20, gz=False)  # raw MNIST: checked by structure only
    files, _ = cifar_members("cifar10", n=24)
    write_files(root / "cifar10" / "cifar-10-batches-bin", files, gz=False)
    table = {"sha256": sha, "counts": {"train": N_TRAIN, "t10k": N_TEST}}
    (root / "tables.json").write_text(json.dumps(table))
    return {
        "root": root, "tables": root / "tables.json", "sha256": sha,
        "fashion-mnist": root / "fashion-mnist", "mnist": root / "mnist",
        "cifar10": root / "cifar10",
        "grey": _image_folder(root / "grey", 1, with_test=True),
        "rgb": _image_folder(root / "rgb", 3, with_test=True),
        "grey-no-test": _image_folder(root / "grey-no-test", 1, with_test=False),
    }


@contextlib.contextmanager
def isolated_env(fixtures: dict, home: Path):
    """The IDX tables made the fixtures', no real home, cache, system folder or network."""
    with pytest.MonkeyPatch.context() as patch:
        for name, digest in fixtures["sha256"].items():
            patch.setitem(idx.FASHION_MNIST_SHA256, name, digest)
        patch.setitem(idx.COUNTS, "train", N_TRAIN)
        patch.setitem(idx.COUNTS, "t10k", N_TEST)
        patch.setattr(fetch, "SYSTEM_DIRS", (home / "system",))
        patch.setenv("HOME", str(home))
        patch.delenv("RESLAB_DATA", raising=False)
        for name in URL_ENVS:
            patch.setenv(name, closed_port_url())
        yield


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets gain nothing from a second thread where other processes share the cores
    (tests/experiments); module-wide, so the module's trained runs get it too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated(fixtures, tmp_path):
    with isolated_env(fixtures, tmp_path / "home"):
        yield


def data_args(fixtures: dict, kind: str) -> list[str]:
    """The options a user gives for each data kind (built-in sets from --data-dir)."""
    if kind in ("fashion-mnist", "mnist", "cifar10"):
        return ["--data", kind, "--data-dir", str(fixtures[kind]), "--val-size", "20"]
    channels = "1" if kind.startswith("grey") else "3"
    return ["--data", f"folder:{fixtures[kind]}", "--image-size", "16", "--channels", channels]


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-3000:]!r})"


def cli(*args) -> Result:
    """``reslab ARGS`` in-process: its exit code (argparse's included), stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def start_cli(fixtures: dict, home: Path, *args, pause: str | None = None,
              paused: Path | None = None, go: Path | None = None) -> subprocess.Popen:
    """``reslab ARGS`` as a process, the IDX tables patched by ``run_cli.py``; ``pause``
    (``after-step:N``) makes it wait there until the test signals it or lets it go."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HOME": str(home),
                        "RESLAB_PATHS_TABLES": str(fixtures["tables"]),
                        "RESLAB_PATHS_SYSTEM": str(home / "system")}
    env.pop("RESLAB_DATA", None)
    env |= {name: closed_port_url() for name in URL_ENVS}
    if pause is not None:
        env |= {"RESLAB_PAUSE": pause, "RESLAB_PAUSED": str(paused), "RESLAB_GO": str(go)}
    return subprocess.Popen([sys.executable, RUN_CLI, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
