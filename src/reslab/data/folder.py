"""Image folders: ``ROOT/<class>/<image>``, optionally under ``ROOT/train``, ``val``, ``test``.

Images are decoded with Pillow, converted to 1 ("L") or 3 ("RGB") channels, and resized to a
square (shorter side to ``image_size``, then centre-cropped). Unreadable, truncated or oversized
images (Pillow's decompression-bomb limit, ``Image.MAX_IMAGE_PIXELS``) are skipped and named in
one warning; a class with no readable image, or no image at all, is an error.

Small sets are decoded once into memory (``Split``). Sets whose decoded size would pass
``IN_MEMORY_LIMIT_BYTES`` (or with ``in_memory=False``) stay on disk as a ``FileSplit``, decoded
per batch by DataLoader workers; their headers are checked up front, but an image whose data is
truncated is only found when it is decoded (by the mean/std pass over up to 10,000 training
images, or when its batch is read), which stops with its name.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from reslab.data.splits import ImageSplit, Loaded, SourceInfo, Split
from reslab.errors import ConfigError, CorruptDataError, DataNotFoundError
from reslab.limits import MAX_IMAGE_SIDE
from reslab.paths import expand, printable

log = logging.getLogger(__name__)

DECODE_BUDGET_BYTES = 512 << 20  # decoded pixels all decoding threads hold at once
IN_MEMORY_LIMIT_BYTES = 2 << 30  # decoded size; loading needs about twice this at its peak
SPLITS = ("train", "val", "test")
MODES = {1: "L", 3: "RGB"}


def image_suffixes() -> frozenset[str]:
    Image.init()
    return frozenset(Image.registered_extensions())


class _DecodeBudget:
    """Bytes of decoded pixels the decoding threads may hold at once: a thread waits until
    its image fits beside the others' (one image alone always may), so that 8 threads on 8
    images just under Pillow's bomb limit hold one or two of them, not all 8 (2.3 GB)."""

    def __init__(self) -> None:
        self._held = 0
        self._free = threading.Condition()

    @staticmethod
    def limit() -> int:
        from reslab import memory

        return max(64 << 20, min(DECODE_BUDGET_BYTES, memory.budget_bytes() // 4))

    @contextmanager
    def hold(self, nbytes: int):
        limit = self.limit()
        with self._free:
            self._free.wait_for(lambda: self._held == 0 or self._held + nbytes <= limit)
            self._held += nbytes
        try:
            yield
        finally:
            with self._free:
                self._held -= nbytes
                self._free.notify_all()


DECODE_BUDGET = _DecodeBudget()


def decode_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image as uint8 ``(channels, size, size)``; CorruptDataError if it cannot be read.
    Decoding holds its share of ``DECODE_BUDGET`` (its pixels, in RGBA, and a copy)."""
    try:
        with Image.open(path) as opened:
            _refuse_bomb(opened)
            with DECODE_BUDGET.hold(2 * 4 * opened.width * opened.height):
                return image_pixels(opened, size, channels)
    except Image.DecompressionBombError as error:
        raise CorruptDataError(f"{path}: refused, possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptDataError(f"{path}: unreadable image ({error})") from None


def image_pixels(image: Image.Image, size: int, channels: int) -> torch.Tensor:
    """A Pillow image as uint8 ``(channels, size, size)``: turned upright by its EXIF tag,
    converted to grey or RGB, shorter side resized to ``size`` and centre-cropped. Files and
    in-memory images (``reslab.load(...).predict``) go through this same conversion."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):  # 16-bit grey: convert() would clip it at 255
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    image = ImageOps.fit(image.convert(MODES[channels]), (size, size), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    return pixels.reshape(size, size, channels).permute(2, 0, 1).contiguous()


def probe_image(path: Path) -> None:
    """Check an image's header only (format and size); CorruptDataError if it is refused."""
    try:
        with Image.open(path) as opened:
            _refuse_bomb(opened)
    except Image.DecompressionBombError as error:
        raise CorruptDataError(f"{path}: refused, possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptDataError(f"{path}: unreadable image ({error})") from None


def _refuse_bomb(image: Image.Image) -> None:
    # Pillow only raises past twice the limit (it warns below that); we refuse at the limit.
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} pixels, over the limit of {limit:,}")


@dataclass(frozen=True, eq=False)
class FileSplit:
    """Images left on disk; ``split[i]`` decodes one, ``load(indices)`` a batch (uint8)."""

    files: tuple[Path, ...]
    labels: torch.Tensor
    channels: int
    image_size: int

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_image(self.files[index], self.image_size, self.channels)

    def subset(self, indices: torch.Tensor) -> FileSplit:
        return FileSplit(tuple(self.files[i] for i in indices.tolist()), self.labels[indices],
                         self.channels, self.image_size)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        if len(indices) == 0:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8)
        with _pool() as pool:
            return torch.stack(list(pool.map(self.__getitem__, indices.tolist())))


def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))


def _class_dirs(folder: Path) -> list[Path]:
    """The class folders of ``folder``: visible folders, and links to folders inside it (a
    link out of it, to ``/`` say, is left out with a warning, never walked)."""
    root, found = folder.resolve(), []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            log.warning("left out %s: a link to a folder outside %s", printable(path),
                        printable(folder))
            continue
        found.append(path)
    return found


def walk_images(folder: Path, limit: int | None = None, root: Path | None = None,
                too_many: str | None = None) -> list[Path]:
    """The image files under ``folder`` (by suffix), sorted by path; hidden files and folders
    left out; links to folders never followed, links to files only when they stay inside
    ``root`` (default ``folder``). More than ``limit`` is refused (ConfigError, saying
    ``too_many``). Both the
    image-folder reader and ``reslab predict`` list folders with this one walk."""
    suffixes = image_suffixes()
    inside = (root or folder).resolve()
    found: list[Path] = []
    for where, folders, files in os.walk(folder, followlinks=False):
        folders[:] = [f for f in folders if not f.startswith(".")]
        for name in files:
            path = Path(where) / name
            if name.startswith(".") or path.suffix.lower() not in suffixes:
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                log.warning("left out %s: a link to a file outside %s", printable(path),
                            printable(root or folder))
                continue
            if not path.is_file():
                continue
            found.append(path)
            if limit is not None and len(found) > limit:
                raise ConfigError(f"{printable(folder)}: " + (too_many or (
                    f"more than {limit:,} images; give a smaller folder, or its subfolders "
                    "in turn")))
    return sorted(found)


def load_folder(
    root: str | os.PathLike,
    *,
    image_size: int = 32,
    channels: int = 3,
    in_memory: bool | None = None,
) -> Loaded:
    """Read an image folder; val and test are set only where the folder has them."""
    if channels not in MODES:
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if not 1 <= image_size <= MAX_IMAGE_SIDE:
        raise ConfigError(f"image_size must be in 1...{MAX_IMAGE_SIDE}, got {image_size}")
    root = expand(root, "image folder")
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} does not exist; check the path")
    split_dirs = {name: root / name for name in SPLITS if (root / name).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise CorruptDataError(f"{root}: has {'/, '.join(split_dirs)}/ but no train/ folder; "
                               "add train/<class>/<image> folders")
    train_dir = split_dirs.get("train", root)
    classes = tuple(d.name for d in _class_dirs(train_dir))
    if not classes:
        raise DataNotFoundError(f"{train_dir}: no class folders; expected "
                                f"{train_dir}/<class>/<image> (one folder per class)")
    listed = {name: _list_split(folder, classes)
              for name, folder in {**split_dirs, "train": train_dir}.items()}
    total = sum(len(files) for files, _ in listed.values())
    if total == 0:
        raise DataNotFoundError(f"{root}: no images found in its class folders (files in a "
                                "format Pillow reads, such as .png or .jpg)")
    if in_memory is None:
        in_memory = total * channels * image_size**2 <= IN_MEMORY_LIMIT_BYTES

    skipped: list[str] = []
    read = partial(decode_image, size=image_size, channels=channels) if in_memory else probe_image

    def build(name: str) -> ImageSplit:
        files, labels = listed[name]
        kept, images = _read_all(files, read, skipped)
        kept_labels = torch.tensor([labels[i] for i in kept], dtype=torch.int64)
        _check_classes(split_dirs.get(name, root), classes, kept_labels, listed[name][1])
        if not in_memory:
            return FileSplit(tuple(files[i] for i in kept), kept_labels, channels, image_size)
        shape = (len(kept), channels, image_size, image_size)
        stacked = torch.stack(images) if images else torch.empty(shape, dtype=torch.uint8)
        return Split(stacked, kept_labels)

    splits = {name: build(name) for name in listed}
    if skipped:
        shown = "; ".join(skipped[:20]) + (f"; and {len(skipped) - 20} more" if
                                            len(skipped) > 20 else "")
        log.warning("skipped %d unreadable image(s) under %s: %s", len(skipped), printable(root),
                    printable(shown))  # file names from the disk
    val_origin = f"from {split_dirs['val']}" if "val" in splits else ""
    source = SourceInfo(location=root, verification="images decoded" if in_memory else
                        "image headers checked (decoded per batch)", val_origin=val_origin,
                        skipped=tuple(skipped))
    return Loaded(train=splits["train"], val=splits.get("val"), test=splits.get("test"),
                  classes=classes, source=source)


def _list_split(folder: Path, classes: Sequence[str]):
    """(files, labels) of one split folder; a class folder unknown to train/ is an error."""
    present = {d.name: d for d in _class_dirs(folder)}
    unknown = [name for name in present if name not in classes]
    if unknown:
        raise CorruptDataError(f"{folder}: class folder(s) {', '.join(unknown)} not in the "
                               "training classes; add them to train/ or remove them")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        if name in present:
            found = walk_images(present[name], root=folder)
            files += found
            labels += [label] * len(found)
    return files, labels


def _read_all(files: list[Path], read, skipped: list[str]) -> tuple[list[int], list]:
    """Indices of the files ``read`` accepts, and what it returned; failures go to skipped."""

    def attempt(path: Path):
        try:
            return read(path), None
        except CorruptDataError as error:
            return None, str(error)

    kept, results = [], []
    with _pool() as pool:
        for i, (result, failure) in enumerate(pool.map(attempt, files)):
            if failure is None:
                kept.append(i)
                results.append(result)
            else:
                skipped.append(failure)
    return kept, results


def _check_classes(folder: Path, classes, kept: torch.Tensor, listed: list[int]) -> None:
    """Every class folder present in this split must keep at least one readable image."""
    present = set(listed) | {i for i, c in enumerate(classes) if (folder / c).is_dir()}
    counts = torch.bincount(kept, minlength=len(classes))
    if empty := [classes[i] for i in sorted(present) if counts[i] == 0]:
        raise CorruptDataError(f"{folder}: class folder(s) {', '.join(empty)} hold no readable "
                               "image; add images or remove the folder(s)")
