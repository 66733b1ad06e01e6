"""A download is bounded in bytes and in time, and leaves no temporary file: a server sending
endless data, one trickling a byte at a time, a process stopped by SIGTERM mid-download and a
.part a killed one left behind. Servers listen on 127.0.0.1 with bounded loops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reslab.data import fetch, load_dataset
from reslab.data.fetch import DownloadFailed, download
from reslab.data.idx import FASHION_MNIST

from .test_fetch import FILES, serve_fashion

ENDLESS_LIMIT = 64 << 20  # what the endless server sends at most (the client stops far sooner)
TRICKLE_BYTES = 200  # a byte every TRICKLE_S: 40 s in all, unless the client hangs up


class Hostile:
    """``/endless`` streams zeros with no Content-Length; ``/liar`` announces 10 bytes and
    then sends more; ``/trickle`` announces TRICKLE_BYTES and sends one every ``trickle_s``."""

    def __init__(self, trickle_s: float = 0.2) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                try:
                    if self.path == "/endless":
                        self.end_headers()
                        chunk = bytes(1 << 16)
                        for _ in range(ENDLESS_LIMIT // len(chunk)):
                            self.wfile.write(chunk)
                    elif self.path == "/huge":
                        self.send_header("Content-Length", str(10 << 30))
                        self.end_headers()
                        self.wfile.write(bytes(1 << 16))
                    else:
                        self.send_header("Content-Length", str(TRICKLE_BYTES))
                        self.end_headers()
                        for _ in range(TRICKLE_BYTES):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(trickle_s)
                except OSError:  # the client hung up: what the tests want
                    pass
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile_server():
    server = Hostile()
    yield server
    server.close()


def test_endless_data_stops_at_the_cap_and_leaves_nothing(hostile_server, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadFailed, match="more than the 1,048,576 bytes this file can be"):
        download(hostile_server.url + "endless", tmp_path / "x.gz", max_bytes=1 << 20)
    assert time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == []


def test_an_announced_size_over_the_cap_is_refused_before_reading(hostile_server, tmp_path):
    with pytest.raises(DownloadFailed, match="announces 10,737,418,240 bytes"):
        download(hostile_server.url + "huge", tmp_path / "x.gz")
    assert list(tmp_path.iterdir()) == []


def test_a_trickling_server_meets_the_overall_deadline(hostile_server, tmp_path):
    started = time.monotonic()
    with pytest.raises(DownloadFailed, match="not finished after 1 s"):
        download(hostile_server.url + "trickle", tmp_path / "x.gz", deadline=1.0, timeout=5)
    assert time.monotonic() - started < 10
    assert list(tmp_path.iterdir()) == []


def test_the_defaults_bound_every_download():
    assert fetch.MAX_DOWNLOAD_BYTES <= 1 << 30 and fetch.DEADLINE_S <= 3600
    assert FASHION_MNIST.base_url.startswith("https://")


def test_a_stale_part_is_removed_by_the_next_download(tmp_path, make_fashion, http_server,
                                                      monkeypatch):
    serve_fashion(http_server, make_fashion, tmp_path)
    monkeypatch.setenv("RESLAB_FASHION_MNIST_URL", http_server.url)
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "store"))
    target = tmp_path / "store" / "fashion-mnist"
    target.mkdir(parents=True)
    stale = target / f".{FILES[0]}.gz.k1ll3d.part"
    live = target / f".{FILES[1]}.gz.l1v3.part"  # another process, writing right now
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    os.utime(stale, (time.time() - 3600,) * 2)
    load_dataset("fashion-mnist", val_size=0)
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in target.iterdir() if not p.name.startswith(".")) == sorted(
        f"{n}.gz" for n in FILES)


_CHILD = """
import sys
from pathlib import Path
from reslab.data import fetch
from reslab.cli import main
fetch.SYSTEM_DIRS = ()
sys.exit(main(["data", "info", "fashion-mnist"]))
"""


def test_sigterm_mid_download_removes_the_part_and_says_so(hostile_server, tmp_path):
    store = tmp_path / "store"
    env = os.environ | {"RESLAB_DATA": str(store), "HOME": str(tmp_path / "home"),
                        "RESLAB_FASHION_MNIST_URL": hostile_server.url + "trickle/"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folder = store / "fashion-mnist"
    deadline = time.monotonic() + 60
    while not list(folder.glob(".*.part")):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert "Traceback" not in err, err  # the "downloading URL" log line, then the stop line
    assert err.strip().splitlines()[-1].startswith("reslab: stopped by SIGTERM while "
                                                   "downloading http://127.0.0.1:"), err
    assert list(folder.iterdir()) == []
    assert not list(Path(tmp_path / "home").rglob("*.part"))
