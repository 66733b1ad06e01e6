"""Compressed inputs that inflate past the machine: a .pth whose storage is a deflate bomb,
image folders of PNGs just under Pillow's bomb limit decoded by eight threads, and a class
folder that is a link to ``/``. Each is refused or read within a bounded time and peak
memory, in a child under an address-space cap."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from . import hostile
from .test_memory_bounds import refused_in_one_line, reslab_capped, snapshot


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in hostile.CLASSES[:2]:
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                    root / split / label / f"{i}.png")
    return root


def test_a_pth_deflate_bomb_is_refused_from_its_zip_directory(tmp_path):
    """A 4.7 MB .pth whose storage inflates to 4.4 GB reached 4.4 GB RSS in --init-from
    before torch's own check. Here 1 GB, inflated by nothing."""
    bomb = hostile.pth_bomb(tmp_path / "bomb.pth", 1 << 30)
    data = _folder(tmp_path / "pets")
    before = snapshot(tmp_path)
    refused_in_one_line(reslab_capped(["train", "--init-from", str(bomb), "--model", "resnet20",
                                       "--data", f"folder:{data}", "--image-size", "8",
                                       "--channels", "1", "--epochs", "1", "--out",
                                       str(tmp_path / "new")], tmp_path),
                        "bomb.pth", "decompression bomb")
    assert snapshot(tmp_path) == before


def _big_png(side: int) -> bytes:
    """A real grey PNG of side x side zeros (each row filter 0): a few hundred kB."""
    compressor = zlib.compressobj(9)
    row = bytes(side + 1)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + hostile.png_chunk(b"IHDR", header)
            + hostile.png_chunk(b"IDAT", data) + hostile.png_chunk(b"IEND", b""))


def test_eight_huge_pngs_are_not_decoded_all_at_once(tmp_path):
    """8 PNGs of 9400x9400 (just under Pillow's limit) took `data info` to 2.3 GB: eight
    threads each held one. The decode budget lets one or two decode at a time."""
    root = _folder(tmp_path / "pets")
    png = _big_png(9400)
    for i in range(8):
        (root / "train" / hostile.CLASSES[i % 2] / f"big{i}.png").write_bytes(png)
    code, err, seconds, rss = reslab_capped(["data", "info", f"folder:{root}"], tmp_path,
                                            cap=6_000_000_000)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert rss < 1300, rss
    assert seconds < 60, seconds


def test_a_class_folder_linked_to_the_root_of_the_disk_is_not_walked(tmp_path):
    """A class folder that is a link to / made the walk list 7,079 system images in 30 s."""
    root = _folder(tmp_path / "pets")
    os.symlink("/", root / "train" / "zz-system")
    os.symlink("/usr", root / "train" / hostile.CLASSES[0] / "inside")
    code, err, seconds, rss = reslab_capped(["data", "info", f"folder:{root}"], tmp_path)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "left out" in err and "zz-system" in err
    assert seconds < 30, seconds


def test_predict_and_the_folder_reader_share_one_walk():
    from reslab import deploy
    from reslab.data import folder

    assert deploy.walk_images is folder.walk_images


def test_eight_decoding_threads_hold_no_more_than_the_budget(tmp_path, monkeypatch):
    """On a machine of 8 or more cores 8 threads decoded 8 images at once; with the budget at
    one image's share the big ones decode one at a time (the result unchanged)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Lock

    from reslab.data import folder

    root = _folder(tmp_path / "pets")
    for i in range(8):
        Image.fromarray(np.zeros((1000, 1000), np.uint8)).save(
            root / "train" / hostile.CLASSES[i % 2] / f"big{i}.png")
    now, most, lock = [0], [0], Lock()
    decode = folder.image_pixels

    def counted(image, *args, **kwargs):
        if image.width < 1000:  # the small images fit beside one another
            return decode(image, *args, **kwargs)
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        try:
            return decode(image, *args, **kwargs)
        finally:
            with lock:
                now[0] -= 1

    monkeypatch.setattr(folder, "_pool", lambda: ThreadPoolExecutor(max_workers=8))
    monkeypatch.setattr(folder, "image_pixels", counted)
    monkeypatch.setattr(folder._DecodeBudget, "limit", staticmethod(lambda: 8_000_000))
    loaded = folder.load_folder(root, image_size=8, channels=1)
    assert len(loaded.train) == 16 and most[0] == 1, most
