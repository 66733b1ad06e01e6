"""Durable file output: every file reslab writes appears whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file in its folder, renamed into place on success.

    ``file.name`` is the temporary file's path (to verify it before the rename). The
    temporary file is fsynced before the rename and the folder after it, so a crash at
    any point leaves either the previous file or the new one. On an exception the temporary
    file is removed and the previous file is untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # by path: file.name is tmp
        yield file
        file.flush()
        os.fsync(file.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary file beside ``path`` for a writer that wants a path (torch.onnx):
    created exclusively under a random name (no existing file or link is followed), renamed
    onto ``path`` when the block succeeds, removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as file:
        file.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every file system allows opening a folder.
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` to fill; when the block succeeds it replaces
    ``path`` (a folder the caller has checked may go) by renames, so a crash leaves the old
    folder or the new one whole (the old one, at worst, beside it as ``.NAME.*.old``), never
    a mix of the two."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part"))
    try:
        yield tmp
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; outputs are meant to be shared
        old = None
        if os.path.lexists(path):
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "folder")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
