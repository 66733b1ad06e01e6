"""CIFAR-10/100 binary archives and extracted folders, and their bad inputs."""

import hashlib

import numpy as np
import pytest
import torch

from reslab.data import cifar, load_dataset
from reslab.errors import ChecksumError, CorruptDataError, DataNotFoundError


def test_cifar10_archive(tmp_path, make_cifar):
    arrays = make_cifar(tmp_path / "c10", "cifar10", n=12)
    data = load_dataset("cifar10", tmp_path / "c10", val_size=0)

    assert data.train.images.shape == (60, 3, 32, 32) and data.test.images.shape == (12, 3, 32, 32)
    labels, images = arrays["data_batch_2.bin"]
    # Records are label, then 1,024 red, 1,024 green, 1,024 blue bytes, each row-major 32x32.
    assert torch.equal(data.train.images[12:24], torch.from_numpy(images))
    assert torch.equal(data.train.labels[12:24], torch.from_numpy(labels[:, 0]).long())
    assert torch.equal(data.test.images, torch.from_numpy(arrays["test_batch.bin"][1]))
    assert data.classes == tuple(f"class{i}" for i in range(10))  # trailing blank lines ignored
    assert data.source.verification == "MD5 of the archive verified"
    assert data.source.location == tmp_path / "c10" / "cifar-10-binary.tar.gz"


def test_cifar10_extracted_folder(tmp_path, make_cifar):
    arrays = make_cifar(tmp_path / "c10", "cifar10", extracted=True)
    data = load_dataset("CIFAR-10", tmp_path / "c10", val_size=10)
    assert len(data.train) == 50 and len(data.val) == 10 and len(data.test) == 12
    assert data.source.location == tmp_path / "c10" / "cifar-10-batches-bin"
    assert "structure checked" in data.source.verification
    assert torch.equal(data.test.labels, torch.from_numpy(arrays["test_batch.bin"][0][:, 0]).long())


def test_cifar100_uses_the_fine_label(tmp_path, make_cifar):
    arrays = make_cifar(tmp_path / "c100", "cifar100", n=15)
    data = load_dataset("cifar100", tmp_path / "c100", val_size=0)
    labels, images = arrays["train.bin"]
    assert torch.equal(data.train.labels, torch.from_numpy(labels[:, 1]).long())
    assert torch.equal(data.train.images, torch.from_numpy(images))
    assert len(data.classes) == 100 and data.classes[99] == "fine99"


def test_archive_md5_mismatch(tmp_path, make_cifar, monkeypatch):
    make_cifar(tmp_path / "c10")
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar-10-binary.tar.gz", "0" * 32)
    with pytest.raises(ChecksumError, match=r"binary\.tar\.gz: MD5 [0-9a-f]{32}, expected"):
        load_dataset("cifar10", tmp_path / "c10")


def test_truncated_archive_is_unreadable(tmp_path, make_cifar, monkeypatch):
    make_cifar(tmp_path / "c10")
    archive = tmp_path / "c10" / "cifar-10-binary.tar.gz"
    cut = archive.read_bytes()[: archive.stat().st_size // 2]
    archive.write_bytes(cut)
    monkeypatch.setitem(cifar.ARCHIVE_MD5, archive.name, hashlib.md5(cut).hexdigest())
    with pytest.raises(CorruptDataError, match=r"cifar-10-binary\.tar\.gz: cannot read the archive"
                                               r" \((reading|after) member cifar-10-batches-bin/"):
        load_dataset("cifar10", tmp_path / "c10")


def test_truncated_record_file(tmp_path, make_cifar):
    make_cifar(tmp_path / "c10", extracted=True)
    path = tmp_path / "c10" / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CorruptDataError, match=r"data_batch_3\.bin holds 35,876 bytes, not a "
                                               r"whole number of 3,073-byte records"):
        load_dataset("cifar10", tmp_path / "c10")


def test_label_out_of_range(tmp_path, make_cifar):
    make_cifar(tmp_path / "c100", "cifar100", extracted=True)
    path = tmp_path / "c100" / "cifar-100-binary" / "test.bin"
    data = bytearray(path.read_bytes())
    data[3074 + 1] = 100  # the fine label of the second record
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=r"test\.bin has fine label 100, out of range "
                                               r"0\.\.\.99"):
        load_dataset("cifar100", tmp_path / "c100")


def test_archive_without_a_member(tmp_path, make_cifar):
    make_cifar(tmp_path / "c10", omit=("data_batch_4.bin",))
    with pytest.raises(CorruptDataError, match=r"archive lacks cifar-10-batches-bin/data_batch_4"):
        load_dataset("cifar10", tmp_path / "c10")


def test_extracted_folder_missing_a_file_is_not_found(tmp_path, make_cifar):
    make_cifar(tmp_path / "c10", extracted=True, omit=("batches.meta.txt",))
    with pytest.raises(DataNotFoundError, match="CIFAR-10 not found"):
        load_dataset("cifar10", tmp_path / "c10")


def test_download_archive(tmp_path, make_cifar, http_server, monkeypatch):
    make_cifar(tmp_path / "served", "cifar10")
    http_server.routes["/cifar-10-binary.tar.gz"] = (
        tmp_path / "served" / "cifar-10-binary.tar.gz").read_bytes()
    monkeypatch.setenv("RESLAB_CIFAR_URL", http_server.url)
    data = load_dataset("cifar10", val_size=0)
    assert data.source.downloaded
    assert data.source.location == (tmp_path / "home" / ".cache" / "reslab" / "cifar10"
                                    / "cifar-10-binary.tar.gz")
    assert len(data.train) == 60 and np.all(np.isin(data.train.labels.numpy(), range(10)))
