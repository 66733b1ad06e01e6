"""Property-based: every reader of untrusted files (IDX, CIFAR binary archives, image folders,
weights and checkpoints), fed random bytes and mutated valid files, either returns what the
file truly holds or raises a typed ReslabError; never another exception, a hang, or an
allocation the file's size does not justify."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tempfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from reslab.data import cifar, idx, load_dataset
from reslab.data.folder import decode_image, load_folder, probe_image
from reslab.deploy import predict_files
from reslab.errors import CorruptDataError, ReslabError, WeightsError
from reslab.models.weights import read_state_dict
from reslab.runtime.checkpoint import load_checkpoint, model_from_checkpoint
from reslab.runtime.checkpoint_meta import CheckpointMeta

from . import hostile

FUZZ = hostile.FUZZ
# Pillow and torch warn about the damage they meet; what they do about it is what is tested
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- IDX ------------------------------------------------------------------------------------

IDX_SEEDS = {
    3: hostile.idx_bytes(np.arange(2 * 4 * 5).reshape(2, 4, 5)),
    1: hostile.idx_bytes(np.arange(7)),
}


def _check_idx(stored: bytes, ndim: int, gzipped: bool) -> None:
    """read_idx on a file holding ``stored`` gives exactly what an independent parser finds
    in its (decompressed) content, or a one-line CorruptDataError when that parser finds no
    valid IDX file."""
    try:
        content = gzip.decompress(stored) if gzipped else stored
    except (OSError, EOFError, zlib.error):
        content = None
    expected = None if content is None else hostile.parse_idx(content, ndim)
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), "f.gz" if gzipped else "f", stored)
        try:
            got = idx.read_idx(path, ndim)
        except CorruptDataError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            assert expected is None, f"a valid file refused: {error}"
            event("refused")
            return
    assert expected is not None, "an invalid file accepted"
    assert tuple(got.shape) == expected.shape and np.array_equal(got.numpy(), expected)
    event("read")


@FUZZ
@given(data=st.binary(max_size=120), ndim=st.sampled_from([1, 3]),
       container=st.sampled_from(["raw", "gzip of it", "as .gz", "under a true header"]))
def test_read_idx_on_random_bytes(data, ndim, container):
    if container == "under a true header":  # a valid file whatever the bytes: it must be read
        data = hostile.idx_header(len(data), *[1] * (ndim - 1)) + data
    if container == "gzip of it":
        _check_idx(hostile.gzip_bytes(data), ndim, gzipped=True)
    else:  # "as .gz": bytes that are (almost surely) no gzip stream at all
        _check_idx(data, ndim, gzipped=container == "as .gz")


@FUZZ
@given(data=st.data(), ndim=st.sampled_from([1, 3]), gzipped=st.booleans())
def test_read_idx_on_mutated_files(data, ndim, gzipped):
    content = data.draw(hostile.mutated(IDX_SEEDS[ndim], focus=4 + 4 * ndim))
    if gzipped:  # a valid gzip of a mutated file, or a mutated gzip of it
        stored = data.draw(st.one_of(st.just(hostile.gzip_bytes(content)),
                                     hostile.mutated(hostile.gzip_bytes(content))))
        _check_idx(stored, ndim, gzipped=True)
    else:
        _check_idx(content, ndim, gzipped=False)


MNIST = hostile.mnist_files()


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(MNIST)), gzipped=st.booleans())
def test_loading_mnist_with_a_mutated_file(data, name, gzipped):
    """Through load_dataset: a data set that loads is consistent, anything else is typed."""
    files = dict(MNIST)
    files[name] = data.draw(hostile.mutated(files[name], focus=16))
    with tempfile.TemporaryDirectory() as folder:
        for file_name, content in files.items():
            if gzipped:
                _write(Path(folder), f"{file_name}.gz", hostile.gzip_bytes(content))
            else:
                _write(Path(folder), file_name, content)
        try:
            with mock.patch.dict(idx.COUNTS, train=6, t10k=4):  # the counts of our files
                dataset = load_dataset("mnist", folder, download=False, val_size=1)
        except ReslabError as error:
            assert "\n" not in str(error)
            event(f"refused: {type(error).__name__}")
            return
    event("loaded")
    train = dataset.split("train")
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert len(train.images) == len(train.labels) and int(train.labels.max()) < 10


# --- CIFAR binary archives --------------------------------------------------------------------

CIFAR_MEMBERS = hostile.cifar10_members(n=1)
CIFAR_TAR = hostile.tar_bytes(hostile.CIFAR10_INNER, CIFAR_MEMBERS)


def _load_cifar_archive(archive: bytes):
    """load_cifar on ``archive``, its MD5 made the expected one (as a mirror that serves a
    forged archive and checksum would): the structural checks are all that is left."""
    with tempfile.TemporaryDirectory() as folder:
        _write(Path(folder), cifar.CIFAR10.archive, archive)
        digest = hashlib.md5(archive).hexdigest()
        with mock.patch.dict(cifar.ARCHIVE_MD5, {cifar.CIFAR10.archive: digest}):
            return cifar.load_cifar(cifar.CIFAR10, folder, download=False)


def _check_cifar(loaded) -> None:
    event("loaded")
    for split in (loaded.train, loaded.test):
        assert split.images.shape[1:] == (3, 32, 32) and split.images.dtype == torch.uint8
        assert len(split.images) == len(split.labels) and int(split.labels.max()) < 10
    assert len(loaded.classes) == 10


@FUZZ
@given(data=st.data(), level=st.sampled_from(["tar", "gzip"]))
def test_cifar_archive_mutated(data, level):
    if level == "tar":  # the tar structure itself: headers, sizes, names, member data
        archive = hostile.gzip_bytes(data.draw(hostile.mutated(CIFAR_TAR)))
    else:  # the compressed stream
        archive = data.draw(hostile.mutated(hostile.gzip_bytes(CIFAR_TAR), focus=64))
    try:
        loaded = _load_cifar_archive(archive)
    except CorruptDataError as error:
        assert "\n" not in str(error)
        event("refused")
        return
    _check_cifar(loaded)


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(CIFAR_MEMBERS)))
def test_cifar_extracted_folder_with_a_mutated_file(data, name):
    members = dict(CIFAR_MEMBERS)
    members[name] = data.draw(st.one_of(hostile.mutated(members[name]), st.binary(max_size=64)))
    with tempfile.TemporaryDirectory() as folder:
        for member, content in members.items():
            _write(Path(folder) / cifar.CIFAR10.inner, member, content)
        try:
            loaded = cifar.load_cifar(cifar.CIFAR10, folder, download=False)
        except CorruptDataError as error:
            assert "\n" not in str(error)
            event("refused")
            return
    _check_cifar(loaded)


# --- images -----------------------------------------------------------------------------------

def _image(mode: str, fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (10, 12), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


IMAGE_SEEDS = {
    "png": _image("RGB", "PNG"), "jpg": _image("RGB", "JPEG"), "gif": _image("P", "GIF"),
    "bmp": _image("RGB", "BMP"), "tif": _image("RGB", "TIFF"), "webp": _image("RGB", "WEBP"),
    "ico": _image("RGBA", "ICO"), "ppm": _image("RGB", "PPM"), "tga": _image("RGB", "TGA"),
    "16-bit.png": _image("I;16", "PNG"), "cmyk.jpg": _image("CMYK", "JPEG"),
    "la.png": _image("LA", "PNG"),
}
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00",
         b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b"\x00\x00\x01\x00", b"8BPS"]
SUFFIXES = [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".webp", ".ico", ".ppm", ".PNG"]


def _check_decode(path: Path, channels: int) -> bool:
    """decode_image gives (channels, 8, 8) uint8 or a one-line CorruptDataError naming path."""
    try:
        pixels = decode_image(path, 8, channels)
    except CorruptDataError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        event("refused")
        return False
    assert pixels.shape == (channels, 8, 8) and pixels.dtype == torch.uint8
    event("decoded")
    return True


@FUZZ
@given(magic=st.sampled_from(MAGIC), rest=st.binary(max_size=200),
       suffix=st.sampled_from(SUFFIXES), channels=st.sampled_from([1, 3]))
def test_decode_image_on_random_bytes(magic, rest, suffix, channels):
    with tempfile.TemporaryDirectory() as folder:
        _check_decode(_write(Path(folder), f"x{suffix}", magic + rest), channels)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(IMAGE_SEEDS)), channels=st.sampled_from([1, 3]))
def test_decode_image_on_mutated_images(data, kind, channels):
    content = data.draw(hostile.mutated(IMAGE_SEEDS[kind], focus=64))
    with tempfile.TemporaryDirectory() as folder:
        _check_decode(_write(Path(folder), f"x.{kind}", content), channels)


@settings(FUZZ, max_examples=200)  # fewer: each example writes and loads a folder
@given(data=st.data(), in_memory=st.booleans())
def test_load_folder_with_hostile_files(data, in_memory):
    """Each class folder gets a few files, good, mutated or random: the folder loads with
    exactly the images reslab accepts one by one (decoded in memory; on disk, headers only),
    and is refused (CorruptDataError) exactly when a class is left without one."""
    files = {}
    for label in ("a", "b"):
        for i in range(data.draw(st.integers(1, 3))):
            kind = data.draw(st.sampled_from(sorted(IMAGE_SEEDS)))
            content = data.draw(st.one_of(st.just(IMAGE_SEEDS[kind]),
                                          hostile.mutated(IMAGE_SEEDS[kind], focus=64),
                                          st.binary(max_size=64)))
            files[f"{label}/{i}.{kind}"] = content
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, content in files.items():
            _write(root, name, content)
        accepted = {name: _check_decode(root / name, 3) if in_memory else _probes(root / name)
                    for name in files}
        empty = [c for c in "ab" if not any(ok for n, ok in accepted.items() if n[0] == c)]
        try:
            loaded = load_folder(root, image_size=8, channels=3, in_memory=in_memory)
        except CorruptDataError as error:
            assert empty and f"class folder(s) {', '.join(empty)} hold no readable image" \
                in str(error), (empty, str(error))
            event("folder refused")
            return
    assert not empty
    event("folder loaded")
    assert loaded.classes == ("a", "b") and len(loaded.train) == sum(accepted.values())
    if in_memory:
        assert loaded.train.images.shape[1:] == (3, 8, 8)


def _probes(path: Path) -> bool:
    try:
        probe_image(path)
        return True
    except CorruptDataError:
        return False


# --- weights and checkpoints -----------------------------------------------------------------

def _checkpoint_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = hostile.write_checkpoint(Path(folder) / "last.safetensors", train_state=True)
        return path.read_bytes()


CHECKPOINT = _checkpoint_bytes()
HEADER_END = 8 + int.from_bytes(CHECKPOINT[:8], "little")


def _torch_saved(legacy: bool) -> bytes:
    buffer = io.BytesIO()
    weights = {"conv.weight": torch.arange(12.0).view(3, 4), "bn.num_batches_tracked":
               torch.tensor(3), "nested": {"x": torch.ones(2, dtype=torch.float16)}}
    torch.save({"state_dict": weights}, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


PTH_SEEDS = {"zip": _torch_saved(False), "legacy": _torch_saved(True)}


def _check_weights(path: Path, loaders=("read_state_dict", "load_checkpoint", "model")) -> None:
    """Each loader returns something sound or raises a one-line WeightsError."""
    size = path.stat().st_size
    for loader in loaders:
        try:
            if loader == "read_state_dict":
                state = read_state_dict(path)
                assert all(isinstance(k, str) and isinstance(v, torch.Tensor)
                           for k, v in state.items())
                # no tensor larger than the file: nothing was allocated on a header's word
                assert sum(v.numel() * v.element_size() for v in state.values()) <= size
                event("read_state_dict: read")
            elif loader == "load_checkpoint":
                checkpoint = load_checkpoint(path)
                assert isinstance(checkpoint.meta, CheckpointMeta)
                event("load_checkpoint: loaded")
            else:
                model, meta = model_from_checkpoint(path)
                assert not model.training
                loaded = model.state_dict()
                for key, value in read_state_dict(path).items():
                    assert torch.equal(loaded[key], value.to(loaded[key].dtype))
                event("model_from_checkpoint: built")
        except WeightsError as error:
            assert str(path) in str(error) and "\n" not in str(error), str(error)
            event(f"{loader}: refused")


@FUZZ
@given(data=st.binary(max_size=256), suffix=st.sampled_from([".safetensors", ".pth", ".bin"]),
       length_prefix=st.booleans())
def test_weights_readers_on_random_bytes(data, suffix, length_prefix):
    if length_prefix:  # a plausible header length, so the header parser sees the bytes
        data = len(data).to_bytes(8, "little") + data
    with tempfile.TemporaryDirectory() as folder:
        _check_weights(_write(Path(folder), f"w{suffix}", data))


@FUZZ
@given(st.data())
def test_checkpoint_loaders_on_mutated_safetensors(data):
    content = data.draw(hostile.mutated(CHECKPOINT, focus=HEADER_END))
    with tempfile.TemporaryDirectory() as folder:
        _check_weights(_write(Path(folder), "last.safetensors", content))


DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "C64", "Q4", ""]
FIELD_VALUES = st.one_of(
    st.sampled_from(DTYPES),
    st.lists(st.sampled_from([-1, 0, 1, 2, 3, 8, 16, 2**31, 2**63 - 1, 10**12]), max_size=4),
    st.lists(st.integers(-1, 2**64), min_size=2, max_size=2),
    st.none(), st.integers(), st.text(max_size=4))


@FUZZ
@given(st.data())
def test_checkpoint_loaders_on_structurally_tampered_headers(data):
    """Edits that keep the header valid JSON: a field of one tensor, a new tensor, the
    metadata, or the length field; the checks past the JSON parser get exercised."""
    header, body = hostile.safetensors_parts(CHECKPOINT)
    length = None
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(header)))
        action = data.draw(st.sampled_from(["field", "drop", "add", "metadata", "length"]))
        if action == "field" and key != "__metadata__":
            field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            header[key][field] = data.draw(FIELD_VALUES)
        elif action == "drop":
            header.pop(key)
        elif action == "add":
            header[data.draw(st.text(max_size=8))] = {
                "dtype": data.draw(st.sampled_from(DTYPES)),
                "shape": data.draw(st.lists(st.integers(0, 2**40), max_size=3)),
                "data_offsets": data.draw(st.lists(st.integers(0, 2**40), min_size=2,
                                                   max_size=2))}
        elif action == "metadata" and "__metadata__" in header:
            meta = json.loads(header["__metadata__"]["reslab"])
            field = data.draw(st.sampled_from(sorted(meta)))
            meta[field] = data.draw(st.one_of(FIELD_VALUES, st.dictionaries(
                st.text(max_size=4), FIELD_VALUES, max_size=2)))
            header["__metadata__"]["reslab"] = json.dumps(meta)
        elif action == "length":
            length = data.draw(st.sampled_from([0, 1, 7, 2**32, 2**63, 2**64 - 1]))
    content = hostile.safetensors_join(header, body, length)
    with tempfile.TemporaryDirectory() as folder:
        _check_weights(_write(Path(folder), "last.safetensors", content))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**63) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
META = hostile.checkpoint_metadata()


@settings(FUZZ, max_examples=150)  # fewer: each example builds two networks and predicts
@given(changes=st.dictionaries(st.sampled_from(sorted(META) + ["train_state"]),
                               JSON | st.sampled_from([[1, 16, 16], [0.5], [], "resnet20"]),
                               min_size=1, max_size=3))
def test_checkpoint_metadata_with_arbitrary_json_values(changes):
    """Any JSON in any metadata field: model_from_checkpoint and predict_files either work
    (predicting the image) or raise a one-line WeightsError naming the file."""
    header, body = hostile.safetensors_parts(CHECKPOINT)
    header["__metadata__"]["reslab"] = json.dumps(META | changes)
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), "best.safetensors", hostile.safetensors_join(header, body))
        _check_weights(path, loaders=("load_checkpoint", "model"))
        image = Path(folder) / "image.png"
        Image.new("L", (20, 16), 128).save(image)
        try:
            predictions = predict_files(path, [image])
        except WeightsError as error:
            assert str(path) in str(error) and "\n" not in str(error), str(error)
            event("predict: refused")
            return
    assert predictions[0].error is None and len(predictions[0].top) == 3
    event("predict: predicted")


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(PTH_SEEDS)))
def test_read_state_dict_on_mutated_torch_files(data, kind):
    content = data.draw(hostile.mutated(PTH_SEEDS[kind], focus=512))
    with tempfile.TemporaryDirectory() as folder:
        _check_weights(_write(Path(folder), "w.pth", content), loaders=("read_state_dict",))


# --- claims of huge sizes: refused before allocating ----------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_huge_claims_are_refused_before_allocating(tmp_path):
    """In a child whose memory may grow only 256 MiB: headers claiming 10^12 images or a
    terabyte tar member, and a gzip that inflates to 300 MB under a header claiming 2 images,
    are refused (CorruptDataError) without reading or allocating what they claim."""
    claim = hostile.idx_header(10**12 // 784, 28, 28) + bytes(784)
    _write(tmp_path, "raw-claim", claim)
    _write(tmp_path, "claim.gz", hostile.gzip_bytes(claim))
    _write(tmp_path, "bomb.gz", hostile.gzip_bomb(hostile.idx_header(2, 28, 28), 300 << 20))
    mnist = tmp_path / "mnist"
    for name, content in {**MNIST, "train-images-idx3-ubyte": claim}.items():
        _write(mnist, name, content)
    members = dict(CIFAR_MEMBERS)
    archive = hostile.gzip_bytes(hostile.tar_bytes(hostile.CIFAR10_INNER, members,
                                                   {"data_batch_1.bin": 10**12}))
    _write(tmp_path / "cifar", cifar.CIFAR10.archive, archive)
    md5 = hashlib.md5(archive).hexdigest()
    results = hostile.run_capped(f"""
from reslab.data import cifar, idx
from pathlib import Path
folder = Path({str(tmp_path)!r})
attempt("raw", lambda: idx.read_idx(folder / "raw-claim", 3))
attempt("gz", lambda: idx.read_idx(folder / "claim.gz", 3))
attempt("bomb", lambda: idx.read_idx(folder / "bomb.gz", 3))
attempt("dataset", lambda: reslab.data.load_dataset("mnist", folder / "mnist", download=False))
cifar.ARCHIVE_MD5[cifar.CIFAR10.archive] = {md5!r}
attempt("cifar", lambda: cifar.load_cifar(cifar.CIFAR10, folder / "cifar", download=False))
""")
    assert results.pop("control") == "MemoryError"
    assert results.pop("peak_rss_mib") < 1024
    for case, (kind, message) in results.items():
        assert kind == "CorruptDataError", (case, kind, message)
    assert "header claims 1275510204 x 28 x 28 items" in results["raw"][1]
    assert "but the file holds 800 bytes" in results["raw"][1]
    assert "but the file holds far less" in results["gz"][1]
    assert "header claims 2 x 28 x 28 items (1,584 bytes) but the file holds more" \
        in results["bomb"][1]
    assert str(mnist / "train-images-idx3-ubyte") in results["dataset"][1]
    assert "member cifar-10-batches-bin/data_batch_1.bin claims 1,000,000,000,000 bytes" \
        in results["cifar"][1]
