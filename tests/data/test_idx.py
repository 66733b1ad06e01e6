"""Fashion-MNIST / MNIST: strict IDX parsing, verification, and each bad input's typed error."""

import gzip
import hashlib
import tracemalloc

import numpy as np
import pytest
import torch

from reslab.data import idx, load_dataset
from reslab.data.idx import read_idx
from reslab.errors import ChecksumError, CorruptDataError, DataNotFoundError


@pytest.mark.parametrize("gz", [True, False])
def test_reads_the_four_files_exactly(tmp_path, make_fashion, gz):
    arrays = make_fashion(tmp_path / "fm", n_train=60, n_test=20, gz=gz)
    data = load_dataset("fashion-mnist", tmp_path / "fm", val_size=0)

    assert data.train.images.shape == (60, 1, 28, 28)
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    assert np.array_equal(data.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.train.labels.numpy(), arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(data.test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert len(data.classes) == 10
    assert data.source.verification == "SHA-256 verified"
    assert data.source.location == tmp_path / "fm"


def test_fashion_mnist_files_are_not_taken_for_mnist(tmp_path, make_fashion, monkeypatch):
    """The .gz files fail MNIST's published MD5; the raw ones are recognised by their SHA-256."""
    make_fashion(tmp_path / "gz", gz=True)
    with pytest.raises(ChecksumError, match=r"train-images-idx3-ubyte\.gz: MD5 .* published "
                                            "MNIST file"):
        load_dataset("mnist", tmp_path / "gz")
    make_fashion(tmp_path / "raw", gz=False)
    with pytest.raises(ChecksumError, match="this is Fashion-MNIST's train-images-idx3-ubyte, "
                                            "not MNIST's; give --data fashion-mnist"):
        load_dataset("mnist", tmp_path / "raw")


def test_mnist_gz_files_are_checked_against_the_published_md5(tmp_path, make_fashion,
                                                               monkeypatch):
    arrays = make_fashion(tmp_path / "mnist", gz=True, seed=3)
    for path in (tmp_path / "mnist").iterdir():  # stand-ins for the published files
        monkeypatch.setitem(idx.MNIST_GZ_MD5, path.name, hashlib.md5(path.read_bytes()).hexdigest())
    for name in idx.FILES:  # and not Fashion-MNIST's
        monkeypatch.setitem(idx.FASHION_MNIST_SHA256, name, "0" * 64)
    data = load_dataset("MNIST", tmp_path / "mnist", val_size=5)
    assert data.name == "mnist" and data.classes == tuple("0123456789")
    assert len(data.train) == 55 and len(data.val) == 5 and len(data.test) == 20
    assert data.source.verification == "MD5 of the .gz files verified"
    assert np.array_equal(data.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize("gz", [True, False])
def test_swapped_train_and_test_files_are_refused_before_reading(tmp_path, make_fashion, gz):
    """Train and test swapped would give 5,000 training images and 60,000 test ones."""
    make_fashion(tmp_path / "fm", n_train=60, n_test=20, gz=gz)
    end = ".gz" if gz else ""
    for kind in ("images-idx3", "labels-idx1"):
        train, test = (tmp_path / "fm" / f"{s}-{kind}-ubyte{end}" for s in ("train", "t10k"))
        train_bytes = train.read_bytes()
        train.write_bytes(test.read_bytes())
        test.write_bytes(train_bytes)
    with pytest.raises(CorruptDataError, match=r"train-images-idx3-ubyte.*: header claims 20 x 28 "
                                               r"x 28 items, the published file has 60 x 28 x 28"):
        load_dataset("fashion-mnist", tmp_path / "fm")


def test_checksum_mismatch_names_the_file(tmp_path, make_fashion, monkeypatch):
    make_fashion(tmp_path / "fm")
    monkeypatch.setitem(idx.FASHION_MNIST_SHA256, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256.*fetch it"):
        load_dataset("fashion-mnist", tmp_path / "fm")


def _rewrite(path, data: bytes, monkeypatch=None) -> None:
    """Replace a file's content; with monkeypatch, make its new SHA-256 the expected one so
    that the structural check is what fails."""
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    if monkeypatch is not None:
        monkeypatch.setitem(idx.FASHION_MNIST_SHA256, path.name.removesuffix(".gz"),
                            hashlib.sha256(data).hexdigest())


def _content(path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def test_wrong_magic(tmp_path, make_fashion):
    make_fashion(tmp_path / "fm")
    path = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    _rewrite(path, b"\x00\x00\x08\x01" + _content(path)[4:])
    with pytest.raises(CorruptDataError, match=r"train-images-idx3-ubyte\.gz: not an IDX file"):
        load_dataset("fashion-mnist", tmp_path / "fm")


def test_count_mismatch_between_images_and_labels(tmp_path, make_fashion, monkeypatch):
    make_fashion(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "train-labels-idx1-ubyte"
    _rewrite(path, b"\x00\x00\x08\x01" + (59).to_bytes(4, "big") + bytes(59), monkeypatch)
    with pytest.raises(CorruptDataError, match="claims 59 items, the published file has 60"):
        load_dataset("fashion-mnist", tmp_path / "fm")


def test_label_out_of_range(tmp_path, make_fashion, monkeypatch):
    make_fashion(tmp_path / "fm")
    path = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    data = bytearray(_content(path))
    data[-1] = 10
    _rewrite(path, bytes(data), monkeypatch)
    with pytest.raises(CorruptDataError, match=r"labels-idx1-ubyte\.gz: label 10 is out of"):
        load_dataset("fashion-mnist", tmp_path / "fm")


def test_truncated_gzip(tmp_path, make_fashion):
    make_fashion(tmp_path / "fm")
    path = tmp_path / "fm" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptDataError, match=r"t10k-images-idx3-ubyte\.gz: cannot read"):
        load_dataset("fashion-mnist", tmp_path / "fm")


def test_truncated_raw_file(tmp_path, make_fashion):
    make_fashion(tmp_path / "fm", gz=False)
    path = tmp_path / "fm" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-28])
    with pytest.raises(CorruptDataError, match=r"claims 60 x 28 x 28 items .* holds 47,028 bytes"):
        load_dataset("fashion-mnist", tmp_path / "fm")


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_header_refused_before_allocating(tmp_path, gz):
    path = tmp_path / ("images.gz" if gz else "images")
    header = b"\x00\x00\x08\x03" + (2**31).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    _rewrite(path, header + bytes(28 * 28 * 3))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptDataError, match=r"header claims 2147483648 x 28 x 28 items"):
            read_idx(path, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_wrong_image_size(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(b"\x00\x00\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (2, 3, 4))
                     + bytes(24))
    assert read_idx(path, 3).shape == (2, 3, 4)
    with pytest.raises(CorruptDataError, match="not an IDX file of unsigned bytes with 1"):
        read_idx(path, 1)


def test_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"does-not-exist does not exist.*--data-dir"):
        load_dataset("fashion-mnist", tmp_path / "does-not-exist")


def test_more_data_than_the_header_claims(tmp_path):
    path = tmp_path / "labels.gz"
    _rewrite(path, b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(6))
    with pytest.raises(CorruptDataError, match=r"claims 5 items \(13 bytes\) but the file holds "
                                               r"more"):
        read_idx(path, 1)
    _rewrite(path, b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))
    assert read_idx(path, 1).shape == (5,)
