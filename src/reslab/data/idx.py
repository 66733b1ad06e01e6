"""Fashion-MNIST and MNIST: four IDX files (gzip or raw), parsed strictly and verified."""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from reslab.data.fetch import ProgressCallback, download_missing, missing_message, search_dirs
from reslab.data.splits import Loaded, SourceInfo, Split
from reslab.errors import ChecksumError, CorruptDataError, DataNotFoundError

log = logging.getLogger(__name__)

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# SHA-256 of the decompressed files, as published by Zalando Research.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# MNIST publishes no checksum of its decompressed files: its .gz files are checked against the
# widely used MD5s (torchvision's list, from wherever they come), its raw files against the
# published counts and, so that Fashion-MNIST's files are not taken for them, against those.
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# Images in each split of both data sets, as published: a header claiming other counts (another
# release, train and test swapped, or a file of absurd size) is refused before it is read.
COUNTS = {"train": 60_000, "t10k": 10_000}
SIDE = 28

DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than this: bounds what a .gz may claim


@dataclass(frozen=True)
class IdxSource:
    name: str  # also the folder name searched for
    title: str
    base_url: str
    url_env: str  # environment variable that overrides base_url (tests, mirrors)
    classes: tuple[str, ...]
    sha256: dict[str, str] | None  # of the decompressed files; None = structure only
    gz_md5: dict[str, str] | None = None  # of the .gz files
    others_sha256: dict[str, str] | None = None  # another data set's files of the same names
    apt_package: str | None = None


FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    # the bucket's REST endpoint: its website endpoint (s3-website) serves plain http only
    base_url="https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
    url_env="RESLAB_FASHION_MNIST_URL",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    sha256=FASHION_MNIST_SHA256,
    apt_package="dataset-fashion-mnist",
)

MNIST = IdxSource(
    name="mnist",
    title="MNIST",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    url_env="RESLAB_MNIST_URL",
    classes=tuple(str(d) for d in range(10)),
    sha256=None,
    gz_md5=MNIST_GZ_MD5,
    others_sha256=FASHION_MNIST_SHA256,
)


def read_idx(
    path: Path, ndim: int, sha256: str | None = None, *, gzipped: bool | None = None,
    expected: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions as uint8.

    ``gzipped`` defaults to whether the name ends in ``.gz``; ``sha256`` is that of the
    decompressed content. The header's claimed size is checked against the file (and against
    ``expected`` dimensions, when given) before the data is read, so a corrupt header cannot make
    us allocate more than the file holds.
    """
    if gzipped is None:
        gzipped = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as file:
            header = file.read(4 + 4 * ndim)
            dims = _parse_header(path, header, ndim)
            if expected is not None and dims != expected:
                raise CorruptDataError(
                    f"{path}: header claims {' x '.join(map(str, dims))} items, the published "
                    f"file has {' x '.join(map(str, expected))}; it is from another release, "
                    "swapped with another file, or corrupt: fetch the data set again")
            claimed = math.prod(dims)
            stored = os.path.getsize(path)
            if not gzipped and stored != len(header) + claimed:
                raise _size_error(path, dims, len(header) + claimed, f"{stored:,} bytes")
            if gzipped and claimed > DEFLATE_MAX_RATIO * stored:
                raise _size_error(path, dims, len(header) + claimed, "far less")
            data = bytearray(header)
            while len(data) <= len(header) + claimed and (chunk := file.read(1 << 20)):
                data += chunk
    except (OSError, EOFError, zlib.error) as error:
        raise CorruptDataError(f"{path}: cannot read it ({error}); the file is damaged or "
                               "incomplete: delete it and fetch it again") from None
    if len(data) != len(header) + claimed:
        holds = f"{len(data):,} bytes" if len(data) < len(header) + claimed else "more"
        raise _size_error(path, dims, len(header) + claimed, holds)
    if sha256 is not None and (digest := hashlib.sha256(data).hexdigest()) != sha256:
        raise ChecksumError(f"{path}: SHA-256 of its content is {digest}, expected {sha256}; "
                            "the file is damaged or not the official one: delete it and fetch "
                            "it again")
    return torch.frombuffer(data, dtype=torch.uint8)[len(header):].view(dims)


def _parse_header(path: Path, header: bytes, ndim: int) -> tuple[int, ...]:
    expected_magic = bytes((0, 0, 0x08, ndim))
    if len(header) < 4 or header[:4] != expected_magic:
        raise CorruptDataError(f"{path}: not an IDX file of unsigned bytes with {ndim} "
                               f"dimension(s) (magic {header[:4].hex() or 'missing'}, expected "
                               f"{expected_magic.hex()}); check that this is the right file")
    if len(header) < 4 + 4 * ndim:
        raise CorruptDataError(f"{path}: IDX header cut short; delete it and fetch it again")
    return tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))


def _size_error(path: Path, dims: tuple[int, ...], claimed: int, holds: str):
    return CorruptDataError(f"{path}: header claims {' x '.join(map(str, dims))} items "
                            f"({claimed:,} bytes) but the file holds {holds}; it is truncated "
                            "or corrupt: delete it and fetch it again")


def _find(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (raw preferred over .gz), or None unless all are there."""
    found = {}
    for name in FILES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def load_idx_source(
    source: IdxSource,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
) -> Loaded:
    """Find (or download) and read Fashion-MNIST or MNIST; train and test splits."""
    dirs = search_dirs(source.name, data_dir)
    found = next((files for d in dirs if (files := _find(d)) is not None), None)
    downloaded = found is None
    if found is None:
        missing = _missing(source, dirs)
        if not download:
            raise DataNotFoundError(missing("downloading is off"))
        base_url = os.environ.get(source.url_env) or source.base_url
        folder = download_missing(source.name, base_url, [f"{n}.gz" for n in FILES],
                                  verify=lambda name, path: _verify_download(source, name, path),
                                  progress=progress, missing=missing)
        found = _find(folder)
    log.debug("reading %s from %s", source.title, found[FILES[0]].parent)
    train = _read_pair(source, found["train-images-idx3-ubyte"], found["train-labels-idx1-ubyte"])
    test = _read_pair(source, found["t10k-images-idx3-ubyte"], found["t10k-labels-idx1-ubyte"])
    compressed = all(p.suffix == ".gz" for p in found.values())
    verification = ("SHA-256 verified" if source.sha256 is not None else
                    "MD5 of the .gz files verified" if compressed
                    else "counts and structure checked (MNIST publishes checksums of its .gz "
                    "files only: keep them compressed to have them verified)")
    info = SourceInfo(location=found[FILES[0]].parent, verification=verification,
                      downloaded=downloaded)
    return Loaded(train=train, val=None, test=test, classes=source.classes, source=info)


def _checksum(source: IdxSource, path: Path) -> str | None:
    return None if source.sha256 is None else source.sha256[path.name.removesuffix(".gz")]


def _read_pair(source: IdxSource, images_path: Path, labels_path: Path) -> Split:
    count = COUNTS[images_path.name.split("-")[0]]
    images = _read_verified(source, images_path, (count, SIDE, SIDE))
    labels = _read_verified(source, labels_path, (count,))
    if (top := int(labels.max())) >= len(source.classes):
        raise CorruptDataError(f"{labels_path}: label {top} is out of range 0..."
                               f"{len(source.classes) - 1}; the file is corrupt: fetch it again")
    return Split(images.unsqueeze(1), labels.long())


def _read_verified(source: IdxSource, path: Path, expected: tuple[int, ...]) -> torch.Tensor:
    """An IDX file checked against every checksum the data set publishes for it (a raw MNIST
    file, which has none, at least against Fashion-MNIST's)."""
    name = path.name.removesuffix(".gz")
    if path.suffix == ".gz" and source.gz_md5 is not None:
        _check_md5(source, path.name, path)
    tensor = read_idx(path, len(expected), _checksum(source, path), expected=expected)
    if path.suffix != ".gz" and source.others_sha256 is not None and \
            hashlib.sha256(_idx_bytes(tensor)).hexdigest() == source.others_sha256[name]:
        raise ChecksumError(f"{path}: this is Fashion-MNIST's {name}, not {source.title}'s; "
                            f"give --data fashion-mnist, or a folder with {source.title}'s files")
    return tensor


def _idx_bytes(tensor: torch.Tensor) -> bytes:
    """The IDX file a tensor was read from (its header and bytes)."""
    header = bytes((0, 0, 0x08, tensor.ndim)) + b"".join(d.to_bytes(4, "big")
                                                        for d in tensor.shape)
    return header + tensor.numpy().tobytes()


def _check_md5(source: IdxSource, name: str, path: Path, shown: str | None = None) -> None:
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    if digest != source.gz_md5[name]:
        raise ChecksumError(f"{shown or path}: MD5 {digest}, expected {source.gz_md5[name]} (the "
                            f"published {source.title} file); it is damaged or another data "
                            "set's: fetch it again")


def _verify_download(source: IdxSource, name: str, path: Path) -> None:
    if source.gz_md5 is not None:
        _check_md5(source, name, path, f"downloaded {name}")  # path: a temporary file
    sha256 = None if source.sha256 is None else source.sha256[name.removesuffix(".gz")]
    read_idx(path, 3 if "images" in name else 1, sha256, gzipped=True)


def _missing(source: IdxSource, dirs: list[Path]):
    files = ", ".join(f"{n}.gz" for n in FILES)
    ways = [f"put the four files ({files}) in a folder and pass --data-dir FOLDER",
            f"set RESLAB_DATA=FOLDER and put them in FOLDER/{source.name}"]
    if source.apt_package:
        ways.insert(0, f"`apt-get install {source.apt_package}`")
    else:
        ways.append(f"rerun with network access to {source.base_url}")
    return lambda reason: missing_message(source.title, dirs, reason, ways)
