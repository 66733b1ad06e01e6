"""`reslab predict` on hostile images: each is refused with one line naming the file, or
predicted, and the good images of the same call still get their predictions."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reslab.cli import main
from reslab.deploy import predict_files
from reslab.models import ResNetSpec

from . import hostile

# Pillow warns (and we refuse) between its limit and twice it; the refusal is what is tested
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

PREDICTION = r"(class\d) (\d\.\d{3}), (class\d) (\d\.\d{3}), (class\d) (\d\.\d{3})"


@pytest.fixture(scope="module", params=[1, 3], ids=["grey", "rgb"])
def checkpoint(request, tmp_path_factory) -> Path:
    """A tiny untrained model saved as fit saves best.safetensors (1 or 3 input channels)."""
    spec = ResNetSpec(**{**hostile.TINY.to_dict(), "in_channels": request.param})
    folder = tmp_path_factory.mktemp(f"predict{request.param}")
    return hostile.write_checkpoint(folder / "best.safetensors", spec)


def _save(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def _noise(size, mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(
        mode)


def _truncated_png() -> bytes:
    buffer = io.BytesIO()
    _noise((64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()[:300]


def _make(case: str, folder: Path) -> Path:
    """The hostile image of ``case`` in ``folder``."""
    path = folder / {"30000x30000 bomb": "bomb.png", "10000x10000 RGB bomb": "bomb-rgb.png",
                     "truncated png": "truncated.png", "1x1": "tiny.png",
                     "16-bit grey": "grey16.png", "palette": "palette.png", "rgba": "rgba.png",
                     "cmyk jpeg": "cmyk.jpg", "zero bytes": "empty.png",
                     "text as png": "notes.png", "missing": "absent.png",
                     "directory": "folder.png"}[case]
    if case == "30000x30000 bomb":
        path.write_bytes(hostile.png_claiming(30000, 30000))
    elif case == "10000x10000 RGB bomb":  # past reslab's limit, under Pillow's own refusal
        path.write_bytes(hostile.png_claiming(10000, 10000, rgb=True))
    elif case == "truncated png":
        path.write_bytes(_truncated_png())
    elif case == "1x1":
        _save(path, Image.new("RGB", (1, 1), (200, 30, 90)))
    elif case == "16-bit grey":
        _save(path, Image.fromarray(_grey8().astype(np.uint16) * 257))
    elif case == "palette":
        _save(path, _noise((20, 16)).convert("P", palette=Image.Palette.ADAPTIVE),
              transparency=0)
    elif case == "rgba":
        image = _noise((20, 16), "RGBA")
        image.putalpha(Image.linear_gradient("L").resize((20, 16)))
        _save(path, image)
    elif case == "cmyk jpeg":
        _save(path, _noise((20, 16), "CMYK"), quality=95)
    elif case == "zero bytes":
        path.write_bytes(b"")
    elif case == "text as png":
        path.write_text("this is not an image\n" * 10)
    elif case == "directory":
        path.mkdir()
    return path


def _grey8() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (24, 20), dtype=np.uint8)


REFUSED = {
    "30000x30000 bomb": "refused, possible decompression bomb (Image size (900000000 pixels) "
                        "exceeds limit of",
    "10000x10000 RGB bomb": "refused, possible decompression bomb (10000x10000 pixels, over the "
                            "limit of 89,478,485)",
    "truncated png": "unreadable image (image file is truncated",
    "zero bytes": "unreadable image (cannot identify image file",
    "text as png": "unreadable image (cannot identify image file",
    "missing": "unreadable image ([Errno 2] No such file or directory",
    "directory": "no image files in this folder or its subfolders",
}
HANDLED = ["1x1", "16-bit grey", "palette", "rgba", "cmyk jpeg"]


@pytest.fixture
def good(tmp_path) -> list[Path]:
    return [_save(tmp_path / "good.png", _noise((30, 24), seed=1)),
            _save(tmp_path / "good.jpg", _noise((24, 30), "L", seed=2))]


@pytest.mark.parametrize("case", [*REFUSED, *HANDLED])
def test_predict_refuses_or_handles_each_hostile_image_beside_good_ones(case, checkpoint, good,
                                                                        tmp_path, capsys):
    hostile_path = _make(case, tmp_path)
    images = [good[0], hostile_path, good[1]]
    code = main(["predict", str(checkpoint), *map(str, images)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    for path, line in ((good[0], lines[0]), (good[1], lines[-1])):
        assert re.fullmatch(rf"{re.escape(str(path))}: {PREDICTION}", line), line
    if case in REFUSED:  # results on stdout, the refusal on stderr
        assert code == 1  # the CLI's exit status when any image could not be read
        assert len(lines) == 2, captured
        assert captured.err.startswith(f"reslab: error: {hostile_path}: {REFUSED[case]}")
        assert len(captured.err.splitlines()) == 1
    else:
        assert code == 0 and captured.err == "", captured
        assert re.fullmatch(rf"{re.escape(str(hostile_path))}: {PREDICTION}", lines[1]), lines[1]


def test_one_call_with_every_hostile_image_predicts_every_good_one(checkpoint, good, tmp_path,
                                                                 capsys):
    folder = tmp_path / "hostile"
    folder.mkdir()
    cases = [*REFUSED, *HANDLED]
    paths = [_make(case, folder) for case in cases]
    images = [good[0], *paths, good[1]]
    assert main(["predict", str(checkpoint), *map(str, images), "--json", "--top-k", "2"]) == 1
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON Lines
    assert [r["path"] for r in results] == list(map(str, images))
    for case, result in zip(["good", *cases, "good"], results, strict=True):
        if case in REFUSED:
            assert result["top"] == [] and "\n" not in result["error"]
            assert result["error"].startswith(f"{result['path']}: {REFUSED[case]}")
        else:
            assert result["error"] is None and len(result["top"]) == 2, (case, result)
            (first, p1), (second, p2) = result["top"]
            assert first != second and 1 >= p1 >= p2 >= 0


def test_a_16_bit_image_predicts_as_its_8_bit_original(checkpoint, tmp_path):
    """16-bit grey keeps its top byte (Pillow's convert() would clip every value over 255 to
    white); v * 257 in 16 bits is v in 8 bits, so both give the same probabilities."""
    grey8 = _grey8()
    eight = _save(tmp_path / "eight.png", Image.fromarray(grey8))
    sixteen = _save(tmp_path / "sixteen.png", Image.fromarray(grey8.astype(np.uint16) * 257))
    assert Image.open(sixteen).mode == "I;16"
    white = _save(tmp_path / "white.png", Image.new("L", grey8.shape[::-1], 255))
    probs = {Path(p.path).name: dict(p.top) for p in predict_files(
        checkpoint, [eight, sixteen, white], top_k=10)}
    assert probs["sixteen.png"] == pytest.approx(probs["eight.png"])
    assert probs["sixteen.png"] != pytest.approx(probs["white.png"], abs=1e-4)


def test_predict_files_names_the_file_in_each_error(checkpoint, tmp_path):
    paths = [_make(case, tmp_path) for case in REFUSED]
    for path, prediction in zip(paths, predict_files(checkpoint, paths), strict=True):
        assert prediction.path == str(path) and prediction.top == []
        assert prediction.error.startswith(f"{path}: ") and "\n" not in prediction.error


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_bombs_are_refused_before_their_pixels_are_allocated(tmp_path):
    """In a child whose memory may grow only 256 MiB, the 10000x10000 RGB bomb (400 MB
    decoded) and the 30000x30000 one are refused by predict_files, the good image predicted."""
    checkpoint = hostile.write_checkpoint(tmp_path / "best.safetensors")
    bombs = [_make("30000x30000 bomb", tmp_path), _make("10000x10000 RGB bomb", tmp_path)]
    good = _save(tmp_path / "good.png", _noise((30, 24)))
    results = hostile.run_capped(f"""
import warnings
warnings.simplefilter("ignore")
images = {list(map(str, bombs))!r} + [{str(good)!r}]
for p in reslab.deploy.predict_files({str(checkpoint)!r}, images):
    results[p.path] = ["refused", p.error] if p.error else ["predicted", p.top[0][0]]
""")
    assert results.pop("control") == "MemoryError"
    assert results.pop("peak_rss_mib") < 1024
    assert results.pop(str(good))[0] == "predicted"
    for bomb in bombs:
        kind, message = results.pop(str(bomb))
        assert kind == "refused" and "refused, possible decompression bomb" in message
