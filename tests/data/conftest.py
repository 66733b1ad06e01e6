"""Small data sets in the real formats, an isolated environment, and a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reslab.data import cifar, fetch, idx

URL_ENVS = ("RESLAB_FASHION_MNIST_URL", "RESLAB_MNIST_URL", "RESLAB_CIFAR_URL")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real home, cache, RESLAB_DATA, system folder or network for any data test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.setattr(fetch, "SYSTEM_DIRS", (tmp_path / "system",))
    for name in URL_ENVS:
        monkeypatch.setenv(name, closed_port_url())


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes((0, 0, 0x08, array.ndim)) + b"".join(
        d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fashion_arrays(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_files(folder: Path, contents: dict[str, bytes], gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)


@pytest.fixture
def make_fashion(monkeypatch):
    """make(folder, n_train=60, n_test=20, gz=True, seed=0) -> arrays; writes the four files
    and makes their SHA-256 the expected ones (the published table is for the real files)."""

    def make(folder: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0):
        arrays = fashion_arrays(n_train, n_test, seed)
        contents = {name: idx_bytes(a) for name, a in arrays.items()}
        write_files(folder, contents, gz)
        for name, data in contents.items():
            monkeypatch.setitem(idx.FASHION_MNIST_SHA256, name, hashlib.sha256(data).hexdigest())
        monkeypatch.setitem(idx.COUNTS, "train", n_train)  # the published counts, made ours
        monkeypatch.setitem(idx.COUNTS, "t10k", n_test)
        return arrays

    return make


def cifar_records(labels: np.ndarray, images: np.ndarray) -> bytes:
    """labels (N, label_bytes), images (N, 3, 32, 32) -> the binary record format."""
    return np.concatenate([labels.astype(np.uint8), images.reshape(len(images), -1)],
                          axis=1).tobytes()


def cifar_members(kind: str, n: int = 12, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """The files of a small CIFAR-10 ("cifar10") or CIFAR-100 ("cifar100") and their arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    files = {}
    if kind == "cifar10":
        names = [f"class{i}" for i in range(10)]
        parts = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for part in parts:
            labels = rng.integers(0, 10, (n, 1), dtype=np.uint8)
            images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            arrays[part] = (labels, images)
            files[part] = cifar_records(labels, images)
        files["batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
    else:
        names = [f"fine{i}" for i in range(100)]
        for part in ("train.bin", "test.bin"):
            labels = np.stack([rng.integers(0, 20, n), rng.integers(0, 100, n)], 1)
            images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            arrays[part] = (labels.astype(np.uint8), images)
            files[part] = cifar_records(labels, images)
        files["fine_label_names.txt"] = "\n".join(names).encode()
        files["coarse_label_names.txt"] = "\n".join(f"coarse{i}" for i in range(20)).encode()
    return files, arrays


def cifar_tar(inner: str, members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def make_cifar(monkeypatch):
    """make(folder, kind, extracted=False, n=12, omit=()) -> arrays; writes the archive (its MD5
    made the expected one) or the extracted folder, without the members named in omit."""

    def make(folder: Path, kind: str = "cifar10", extracted: bool = False, n: int = 12,
             omit: tuple[str, ...] = ()):
        source = cifar.CIFAR10 if kind == "cifar10" else cifar.CIFAR100
        files, arrays = cifar_members(kind, n)
        files = {name: data for name, data in files.items() if name not in omit}
        if extracted:
            write_files(folder / source.inner, files, gz=False)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            data = cifar_tar(source.inner, files)
            (folder / source.archive).write_bytes(data)
            monkeypatch.setitem(cifar.ARCHIVE_MD5, source.archive, hashlib.md5(data).hexdigest())
        return arrays

    return make


def save_image(path: Path, color, size=(20, 16), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """cats/ (3 images), dogs/ (2 images + a corrupt and a truncated one), notes.txt."""
    root = tmp_path / "pets"
    for i in range(3):
        save_image(root / "cats" / f"cat{i}.png", (200, 10 * i, 0))
    for i in range(2):
        save_image(root / "dogs" / f"dog{i}.jpg", (0, 0, 250))
    (root / "dogs" / "corrupt.png").write_bytes(b"not an image at all")
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).save(buffer, format="PNG")
    (root / "dogs" / "truncated.png").write_bytes(buffer.getvalue()[:200])
    (root / "notes.txt").write_text("not a class")
    return root


class Server:
    """Serves ``routes`` (path -> bytes); paths in ``truncate`` announce twice their length."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                announced = 2 * len(body) if self.path in server.truncate else len(body)
                self.send_header("Content-Length", str(announced))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = Server()
    yield server
    server.close()
