"""Where data sets are found, the offline message, and downloads through a local HTTP server."""

import gzip
import hashlib
import shutil

import pytest

from reslab.data import load_dataset
from reslab.errors import ChecksumError, DataNotFoundError

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def location(**kwargs):
    return load_dataset("fashion-mnist", val_size=0, **kwargs).source.location


def test_discovery_order(tmp_path, make_fashion, monkeypatch):
    given = tmp_path / "given"
    env = tmp_path / "env" / "fashion-mnist"
    cache = tmp_path / "home" / ".cache" / "reslab" / "fashion-mnist"
    system = tmp_path / "system" / "fashion-mnist"
    for folder in (given, env, cache, system):
        make_fashion(folder, n_train=20, n_test=10)
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "env"))

    assert location(data_dir=given) == given
    assert location() == env
    (tmp_path / "empty").mkdir()
    assert location(data_dir=tmp_path / "empty") == env  # data_dir without the files: go on
    assert location(data_dir=tmp_path / "env") == env  # DIR/fashion-mnist/ is looked at too
    monkeypatch.delenv("RESLAB_DATA")
    assert location() == cache
    shutil.rmtree(cache)
    assert location() == system


def test_a_folder_missing_one_file_is_passed_over(tmp_path, make_fashion):
    make_fashion(tmp_path / "given")
    make_fashion(tmp_path / "system" / "fashion-mnist")
    (tmp_path / "given" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert location(data_dir=tmp_path / "given") == tmp_path / "system" / "fashion-mnist"


def test_offline_message_names_the_three_ways(tmp_path):
    # The autouse fixture points the download URL at a closed port on 127.0.0.1.
    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("fashion-mnist")
    message = str(caught.value)
    assert "\n" not in message
    assert "Fashion-MNIST not found" in message
    assert "downloading http://127.0.0.1:" in message
    assert "`apt-get install dataset-fashion-mnist`" in message
    assert "--data-dir" in message
    assert "RESLAB_DATA" in message
    assert str(tmp_path / "home" / ".cache" / "reslab" / "fashion-mnist") in message
    # Nothing half-written is left where the download would have gone.
    target = tmp_path / "home" / ".cache" / "reslab" / "fashion-mnist"
    assert not target.exists() or list(target.iterdir()) == []


def test_download_off(tmp_path):
    with pytest.raises(DataNotFoundError, match="downloading is off"):
        load_dataset("fashion-mnist", download=False)


def serve_fashion(server, make_fashion, tmp_path, **kwargs):
    arrays = make_fashion(tmp_path / "served", **kwargs)
    for name in FILES:
        server.routes[f"/{name}.gz"] = (tmp_path / "served" / f"{name}.gz").read_bytes()
    return arrays


def test_download_verifies_and_stores_in_reslab_data(tmp_path, make_fashion, http_server,
                                                    monkeypatch):
    arrays = serve_fashion(http_server, make_fashion, tmp_path, n_train=30)
    monkeypatch.setenv("RESLAB_FASHION_MNIST_URL", http_server.url)
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "store"))
    calls = []

    data = load_dataset("fashion-mnist", val_size=5,
                        progress=lambda name, done, total: calls.append((name, done, total)))

    target = tmp_path / "store" / "fashion-mnist"
    assert data.source.downloaded and data.source.location == target
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    assert (target / "train-images-idx3-ubyte.gz").read_bytes() == http_server.routes[
        "/train-images-idx3-ubyte.gz"]
    assert len(data.train) + len(data.val) == 30
    assert int(data.test.labels.sum()) == int(arrays["t10k-labels-idx1-ubyte"].sum())
    last = {name: (done, total) for name, done, total in calls}
    assert set(last) == {f"{n}.gz" for n in FILES}
    assert all(done == total for done, total in last.values())
    # Found locally the second time: no more requests.
    requests = len(http_server.requests)
    assert not load_dataset("fashion-mnist", val_size=0).source.downloaded
    assert len(http_server.requests) == requests


def test_download_goes_to_the_cache_without_reslab_data(tmp_path, make_fashion, http_server,
                                                       monkeypatch):
    serve_fashion(http_server, make_fashion, tmp_path)
    monkeypatch.setenv("RESLAB_FASHION_MNIST_URL", http_server.url)
    data = load_dataset("fashion-mnist", val_size=0)
    assert data.source.location == tmp_path / "home" / ".cache" / "reslab" / "fashion-mnist"


def test_interrupted_download_leaves_no_partial_file(tmp_path, make_fashion, http_server,
                                                     monkeypatch):
    serve_fashion(http_server, make_fashion, tmp_path)
    http_server.truncate.add("/t10k-images-idx3-ubyte.gz")
    monkeypatch.setenv("RESLAB_FASHION_MNIST_URL", http_server.url)
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "store"))

    with pytest.raises(DataNotFoundError, match=r"t10k-images-idx3-ubyte\.gz failed: "
                                                r"connection closed after [\d,]+ of [\d,]+ bytes"):
        load_dataset("fashion-mnist")

    target = tmp_path / "store" / "fashion-mnist"
    # The two files fetched before the failure are complete and kept; nothing else is there.
    assert sorted(p.name for p in target.iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]

    # The next run fetches only what is missing.
    http_server.truncate.clear()
    http_server.requests.clear()
    assert load_dataset("fashion-mnist", val_size=0).source.location == target
    assert sorted(http_server.requests) == ["/t10k-images-idx3-ubyte.gz",
                                            "/t10k-labels-idx1-ubyte.gz"]


def test_download_with_wrong_content_is_not_stored(tmp_path, make_fashion, http_server,
                                                   monkeypatch):
    serve_fashion(http_server, make_fashion, tmp_path)
    labels = gzip.decompress(http_server.routes["/train-labels-idx1-ubyte.gz"])
    http_server.routes["/train-labels-idx1-ubyte.gz"] = gzip.compress(labels[:-1] + b"\x01")
    monkeypatch.setenv("RESLAB_FASHION_MNIST_URL", http_server.url)

    with pytest.raises(ChecksumError, match="SHA-256"):
        load_dataset("fashion-mnist")
    target = tmp_path / "home" / ".cache" / "reslab" / "fashion-mnist"
    assert [p.name for p in target.iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_http_error_is_reported(tmp_path, http_server, monkeypatch):
    monkeypatch.setenv("RESLAB_FASHION_MNIST_URL", http_server.url)  # serves nothing: 404
    with pytest.raises(DataNotFoundError, match="HTTP Error 404"):
        load_dataset("fashion-mnist")


def test_mnist_download_checks_the_published_gz_md5(tmp_path, make_fashion, http_server,
                                                    monkeypatch):
    from reslab.data import idx

    serve_fashion(http_server, make_fashion, tmp_path)  # MNIST has the same file names
    monkeypatch.setenv("RESLAB_MNIST_URL", http_server.url)
    with pytest.raises(ChecksumError, match=r"downloaded train-images-idx3-ubyte\.gz: MD5"):
        load_dataset("mnist")  # our small files are not the published ones
    for name in FILES:
        digest = hashlib.md5(http_server.routes[f"/{name}.gz"]).hexdigest()
        monkeypatch.setitem(idx.MNIST_GZ_MD5, f"{name}.gz", digest)
    data = load_dataset("mnist", val_size=0)
    assert data.source.downloaded and len(data.train) == 60
