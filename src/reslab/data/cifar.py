"""CIFAR-10 and CIFAR-100 from the official *binary* archives (fixed-size records, no pickle).

A record is the label byte(s) followed by 3,072 pixel bytes: 1,024 red, 1,024 green, 1,024 blue,
each a 32x32 image in row-major order. The archive is read in place with tarfile (nothing is
extracted to disk); a folder where it was already extracted works too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from reslab.data.fetch import ProgressCallback, download_missing, missing_message, search_dirs
from reslab.data.splits import Loaded, SourceInfo, Split
from reslab.errors import ChecksumError, CorruptDataError, DataNotFoundError

log = logging.getLogger(__name__)

# MD5 of the archives, as published on https://www.cs.toronto.edu/~kriz/cifar.html
ARCHIVE_MD5 = {
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8",
}
PIXELS = 3 * 32 * 32
# CIFAR-100's train.bin, the largest official member: a tar header claiming more is refused
# before tarfile allocates what it claims
MAX_MEMBER_BYTES = 50_000 * (2 + PIXELS)


@dataclass(frozen=True)
class CifarSource:
    name: str  # also the folder name searched for
    title: str
    archive: str
    inner: str  # the folder inside the archive
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    names_file: str
    label_bytes: int
    label_index: int  # which label byte is the class (CIFAR-100: the fine label)
    label_ranges: tuple[tuple[str, int], ...]  # each label byte's name and number of values

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.names_file)


CIFAR10 = CifarSource(
    name="cifar10", title="CIFAR-10", archive="cifar-10-binary.tar.gz",
    inner="cifar-10-batches-bin",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test_files=("test_batch.bin",),
    names_file="batches.meta.txt", label_bytes=1, label_index=0, label_ranges=(("label", 10),),
)
CIFAR100 = CifarSource(
    name="cifar100", title="CIFAR-100", archive="cifar-100-binary.tar.gz",
    inner="cifar-100-binary", train_files=("train.bin",), test_files=("test.bin",),
    names_file="fine_label_names.txt", label_bytes=2, label_index=1,
    label_ranges=(("coarse label", 20), ("fine label", 100)),
)
BASE_URL = "https://www.cs.toronto.edu/~kriz/"
URL_ENV = "RESLAB_CIFAR_URL"


def _find(source: CifarSource, folder: Path) -> Path | None:
    """The archive, or a folder holding its extracted files, in ``folder``."""
    if (folder / source.archive).is_file():
        return folder / source.archive
    for extracted in (folder / source.inner, folder):
        if all((extracted / m).is_file() for m in source.members):
            return extracted
    return None


def load_cifar(
    source: CifarSource,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
) -> Loaded:
    """Find (or download) and read CIFAR-10 or CIFAR-100; train and test splits."""
    dirs = search_dirs(source.name, data_dir)
    found = next((hit for d in dirs if (hit := _find(source, d)) is not None), None)
    downloaded = found is None
    if found is None:
        missing = _missing(source, dirs)
        if not download:
            raise DataNotFoundError(missing("downloading is off"))
        base_url = os.environ.get(URL_ENV) or BASE_URL
        folder = download_missing(source.name, base_url, [source.archive],
                                  verify=lambda _, path: _check_md5(source, path),
                                  progress=progress, missing=missing)
        found = folder / source.archive
    if found.is_file():
        _check_md5(source, found)
        members = _read_archive(source, found)
        verification = "MD5 of the archive verified"
    else:
        members = {m: _read_file(found / m) for m in source.members}
        verification = "structure checked (extracted files; the published MD5 is the archive's)"
    train = _records(source, found, [(m, members[m]) for m in source.train_files])
    test = _records(source, found, [(m, members[m]) for m in source.test_files])
    classes = _class_names(source, found, members[source.names_file])
    info = SourceInfo(location=found, verification=verification, downloaded=downloaded)
    return Loaded(train=train, val=None, test=test, classes=classes, source=info)


def _check_md5(source: CifarSource, path: Path) -> None:
    expected = ARCHIVE_MD5[source.archive]
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    if digest != expected:
        raise ChecksumError(f"{path}: MD5 {digest}, expected {expected} for {source.archive}; "
                            "the archive is damaged or not the official one: delete it and "
                            "fetch it again")


def _read_archive(source: CifarSource, path: Path) -> dict[str, bytes]:
    """The needed members, read in one sequential pass (a .tar.gz cannot seek cheaply)."""
    wanted = {f"{source.inner}/{m}": m for m in source.members}
    members: dict[str, bytes] = {}
    where = ""  # to name the place in the archive where reading failed
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if name not in wanted:
                    continue
                if not member.isfile():
                    raise CorruptDataError(f"{path}: member {name} is not a regular file; "
                                           "fetch the archive again")
                if member.size > MAX_MEMBER_BYTES:
                    raise CorruptDataError(f"{path}: member {name} claims {member.size:,} bytes, "
                                           f"more than any official {source.title} file; fetch "
                                           "the archive again")
                where = f" (reading member {name})"
                members[wanted[name]] = archive.extractfile(member).read()
                where = f" (after member {name})"
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise CorruptDataError(f"{path}: cannot read the archive{where}: {error}; delete it and "
                               "fetch it again") from None
    if absent := [name for name, m in wanted.items() if m not in members]:
        raise CorruptDataError(f"{path}: archive lacks {', '.join(absent)}; this is not the "
                               f"official {source.archive}: fetch it again")
    return members


def _read_file(path: Path) -> bytes:
    try:
        if (size := path.stat().st_size) > MAX_MEMBER_BYTES:  # refused before it is read
            raise CorruptDataError(f"{path}: {size:,} bytes, more than any official CIFAR file "
                                   f"({MAX_MEMBER_BYTES:,}); fetch the data set again")
        return path.read_bytes()
    except OSError as error:
        raise CorruptDataError(f"{path}: cannot read it ({error})") from None


def _records(source: CifarSource, where: Path, parts: list[tuple[str, bytes]]) -> Split:
    record = source.label_bytes + PIXELS
    images, labels = [], []
    for name, data in parts:
        if not data or len(data) % record:
            raise CorruptDataError(f"{where}: {name} holds {len(data):,} bytes, not a whole "
                                   f"number of {record:,}-byte records; it is truncated: fetch "
                                   "it again")
        rows = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, record)
        for i, (label, count) in enumerate(source.label_ranges):
            if (top := int(rows[:, i].max())) >= count:
                raise CorruptDataError(f"{where}: {name} has {label} {top}, out of range "
                                       f"0...{count - 1}; the file is corrupt: fetch it again")
        labels.append(rows[:, source.label_index].long())
        images.append(rows[:, source.label_bytes:].reshape(-1, 3, 32, 32))
    return Split(torch.cat(images), torch.cat(labels))


def _class_names(source: CifarSource, where: Path, data: bytes) -> tuple[str, ...]:
    names = tuple(line.strip() for line in data.decode("utf-8", "replace").splitlines())
    names = tuple(n for n in names if n)
    expected = source.label_ranges[source.label_index][1]
    if len(names) != expected:
        raise CorruptDataError(f"{where}: {source.names_file} lists {len(names)} class names, "
                               f"expected {expected}; fetch the data set again")
    return names


def _missing(source: CifarSource, dirs: list[Path]):
    url = f"{BASE_URL}{source.archive}"
    ways = [f"download {url} into a folder and pass --data-dir FOLDER",
            f"set RESLAB_DATA=FOLDER and put the archive in FOLDER/{source.name}",
            "rerun with network access so reslab downloads it"]
    return lambda reason: missing_message(source.title, dirs, reason, ways)
