"""Hostile inputs for the reliability tests: exploit pickles, tampered safetensors, IDX and
CIFAR files, image bombs, a tiny checkpoint, and a child process with capped memory.

Imported by the test modules of this folder (not a conftest: fixtures live in the tests).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import reslab
from reslab.models import ResNetSpec
from reslab.runtime.checkpoint import save_checkpoint

# Reproducible in CI, no example database; a deadline far above the few milliseconds an
# example takes still catches a hang. About a second per property on one busy core.
FUZZ = settings(derandomize=True, database=None, deadline=5000, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TINY = ResNetSpec(stem="cifar", stem_width=8, depths=(1, 1), widths=(8, 16), in_channels=1,
                  num_classes=10, input_size=16)
CLASSES = [f"class{i}" for i in range(10)]


# --- checkpoints ---------------------------------------------------------------------------

def checkpoint_metadata(network: ResNetSpec = TINY, **changes: Any) -> dict[str, Any]:
    """The metadata fit writes (see training.fit._model_metadata), for ``network``."""
    spec = network
    size = spec.input_size
    meta = {"format": "reslab-checkpoint/1", "model": "tiny", "spec": spec.to_dict(),
            "num_classes": spec.num_classes, "in_channels": spec.in_channels,
            "classes": CLASSES[:spec.num_classes], "mean": [0.5] * spec.in_channels,
            "std": [0.25] * spec.in_channels, "input_size": [spec.in_channels, size, size],
            "data": "fashion-mnist", "tta_flip": False, "config": {"seed": 0},
            "epoch": 1, "step": 1, "metrics": {}}
    return meta | changes


def write_checkpoint(path: Path, network: ResNetSpec = TINY, *, train_state: bool = False,
                     weights: dict[str, torch.Tensor] | None = None, **changes: Any) -> Path:
    """A checkpoint as fit writes it: the weights of a fresh ``network`` (seeded), its
    metadata (``changes`` replace fields), and (``train_state``) optimizer and RNG state as
    last.safetensors has."""
    spec = network
    torch.manual_seed(0)
    model = reslab.build(spec)
    state = None
    if train_state:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(2, spec.in_channels, spec.input_size, spec.input_size)
        model(x).sum().backward()
        optimizer.step()
        state = {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                 "state": {"epoch": 1, "history": [{"loss": 1.0}]}}
    return save_checkpoint(path, model.state_dict() if weights is None else weights,
                           checkpoint_metadata(spec, **changes), state)


def safetensors_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header as a dict, the data bytes after it) of a safetensors file."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def safetensors_join(header: dict[str, Any], body: bytes, length: int | None = None) -> bytes:
    """A safetensors file from a header dict and data; ``length`` overrides the length field."""
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded) if length is None else length) + encoded + body


class Exploit:
    """Unpickling this calls ``callable(*args)``: the classic code-execution payload."""

    def __init__(self, callable_, *args):
        self.call = (callable_, args)

    def __reduce__(self):
        return self.call


def exploits(marker: Path) -> dict[str, bytes]:
    """Files whose unpickling creates ``marker``, each a different way of running code."""
    shell = Exploit(os.system, f"touch '{marker}'")
    touch = Exploit(Path.touch, marker)
    exec_ = Exploit(exec, f"open({str(marker)!r}, 'w').close()")
    files = {
        "raw-pickle-os-system.pth": pickle.dumps({"x": shell, "conv1.weight": torch.zeros(1)},
                                                 protocol=2),
        "raw-pickle-path-touch.bin": pickle.dumps(touch, protocol=4),
        "raw-pickle-exec.ckpt": pickle.dumps({"state_dict": exec_}, protocol=2),
    }
    for name, payload in (("torch-save-os-system.pt", {"model": {"w": shell}}),
                          ("torch-save-exec.pth", {"state_dict": {"fc.weight": exec_}})):
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        files[name] = buffer.getvalue()
    buffer = io.BytesIO()
    torch.save({"fc.weight": touch}, buffer, _use_new_zipfile_serialization=False)
    files["torch-legacy-path-touch.pth"] = buffer.getvalue()
    return files


# --- data files -------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes((0, 0, 0x08, array.ndim)) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_header(*dims: int) -> bytes:
    return bytes((0, 0, 0x08, len(dims))) + b"".join(d.to_bytes(4, "big") for d in dims)


def parse_idx(data: bytes, ndim: int) -> np.ndarray | None:
    """An independent reading of an unsigned-byte IDX file: the array, or None if invalid."""
    size = 4 + 4 * ndim
    if len(data) < size or data[:4] != bytes((0, 0, 8, ndim)):
        return None
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(data) - size != int(np.prod(dims, dtype=object)):
        return None
    return np.frombuffer(data[size:], dtype=np.uint8).reshape(dims)


def mnist_files(n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict[str, bytes]:
    """The four MNIST files (raw), with n_train and n_test 28x28 images."""
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    return {name: idx_bytes(a) for name, a in arrays.items()}


def gzip_bytes(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return compressor.compress(data) + compressor.flush()


def gzip_bomb(prefix: bytes, zeros: int) -> bytes:
    """gzip of ``prefix`` followed by ``zeros`` zero bytes, compressed in 1 MiB steps
    (level 1: 300 MB in a quarter of a second, to 1.4 MB)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [compressor.compress(prefix)]
    chunk = bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    return b"".join(parts)


def pth_bomb(path: Path, inflated: int) -> Path:
    """A torch.save zip of one small tensor whose storage entry is instead ``inflated`` zero
    bytes deflated (level 1: 1 GB to about 1 MB, written in 1 MiB steps)."""
    import zipfile

    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as original, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bomb:
        for info in original.infolist():
            if not info.filename.endswith("/data/0"):
                bomb.writestr(info, original.read(info))
                continue
            with bomb.open(info.filename, "w", force_zip64=True) as entry:
                chunk = bytes(1 << 20)
                for _ in range(inflated >> 20):
                    entry.write(chunk)
    return path


CIFAR10_INNER = "cifar-10-batches-bin"
CIFAR10_PARTS = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)


def cifar10_members(n: int = 2, seed: int = 0) -> dict[str, bytes]:
    """The seven files of a CIFAR-10 with ``n`` records per batch."""
    rng = np.random.default_rng(seed)
    members = {}
    for part in CIFAR10_PARTS:
        labels = rng.integers(0, 10, (n, 1), dtype=np.uint8)
        images = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        members[part] = np.concatenate([labels, images], axis=1).tobytes()
    members["batches.meta.txt"] = "\n".join(f"class{i}" for i in range(10)).encode()
    return members


def tar_bytes(inner: str, members: dict[str, bytes], pax_sizes: dict[str, int] | None = None
              ) -> bytes:
    """An uncompressed tar of ``inner/<name>``; ``pax_sizes`` makes a member claim a size."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(data)
            if pax_sizes and name in pax_sizes:
                info.pax_headers = {"size": str(pax_sizes[name])}
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- images -----------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body)))


def png_claiming(width: int, height: int, rows: int = 64, rgb: bool = False) -> bytes:
    """A valid-looking PNG (grey, or RGB) of ``width`` x ``height`` whose data holds only
    ``rows`` rows of zeros: a few KiB claiming any size, as a decompression bomb's header does."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    data = zlib.compress(bytes(rows * (width * (3 if rgb else 1) + 1)), 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


# --- mutation strategies --------------------------------------------------------------------

BOUNDARY_INTS = (0, 1, 2, 3, 28, 255, 256, 2**31 - 1, 2**31, 2**32 - 1)


@st.composite
def mutated(draw, original: bytes, focus: int | None = None):
    """``original`` with one to four edits: bytes set, 32-bit fields set to boundary values,
    cuts, inserts, deletes, appends. Edits fall within the first ``focus`` bytes when given
    (the header of a structured file), elsewhere only now and then."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        span = len(data)
        if focus is not None and draw(st.integers(0, 3)):
            span = min(span, focus)
        at = draw(st.integers(0, max(span - 1, 0)))
        kind = draw(st.sampled_from(["byte", "int32", "cut", "insert", "delete", "append"]))
        if kind == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "int32":
            data[at:at + 4] = draw(st.sampled_from(BOUNDARY_INTS)).to_bytes(4, "big")
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


# --- a child process with capped memory -----------------------------------------------------

_CHILD = r"""
import json, resource, sys, traceback
import PIL.Image, safetensors.torch, torch
import reslab.data, reslab.deploy, reslab.models.weights, reslab.runtime.checkpoint

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

headroom = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + headroom, resource.RLIM_INFINITY))
results = {}
try:  # the cap works: what it forbids raises MemoryError here
    bytearray(2 * headroom)
    results["control"] = "allocated"
except MemoryError:
    results["control"] = "MemoryError"

def attempt(name, call):
    try:
        call()
        results[name] = ["ok", ""]
    except Exception as error:
        results[name] = [type(error).__name__, str(error)]

__CASES__
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, from the forked (pytest) parent
results["peak_rss_mib"] = next(int(line.split()[1]) for line in open("/proc/self/status")
                               if line.startswith("VmHWM:")) / 1024
print("RESULTS " + json.dumps(results))
"""


def run_capped(cases: str, headroom: int = 256 << 20, timeout: float = 120) -> dict[str, Any]:
    """Run ``cases`` (code calling ``attempt(name, callable)``) in a child whose address space
    may grow only ``headroom`` bytes past what Python, torch and reslab take once imported.

    Returns {name: [exception type name or "ok", message]}, plus "control" (what a
    2 x headroom allocation gave: must be "MemoryError") and "peak_rss_mib".
    """
    code = _CHILD.replace("__CASES__", cases)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(headroom)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULTS "))
