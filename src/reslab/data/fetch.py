"""Where data sets are looked for, and how a missing one is downloaded and stored safely.

Search order for a data set stored under ``SUBDIR`` (e.g. ``fashion-mnist``):

1. ``data_dir`` itself, then ``data_dir/SUBDIR`` (when the caller passes one);
2. ``$RESLAB_DATA/SUBDIR``;
3. ``~/.cache/reslab/SUBDIR``;
4. ``SYSTEM_DIR/SUBDIR`` for each of ``SYSTEM_DIRS`` (Debian's ``dataset-*`` packages).

Downloads go to the first writable of 2 and 3, through a temporary file in the same folder that
is verified, fsynced and renamed into place: an interrupted download never leaves a file that
looks complete. A download is bounded: in bytes (the size the server announces, and
``MAX_DOWNLOAD_BYTES`` in any case), in time per read (``timeout``) and in time overall
(``deadline``); its temporary file is removed on any exit, SIGTERM included, and one a killed
process left behind is removed by the next download into that folder.
"""

from __future__ import annotations

import glob
import http.client
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from urllib.error import HTTPError

from reslab.errors import DataNotFoundError, Interrupted, ReslabError
from reslab.io import atomic_output
from reslab.paths import expand

log = logging.getLogger(__name__)

SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)

ProgressCallback = Callable[[str, int, int | None], None]
"""Called as ``progress(file_name, bytes_done, bytes_total_or_None)`` while downloading."""

CHUNK = 1 << 16
MAX_DOWNLOAD_BYTES = 512 << 20  # the largest file reslab fetches (CIFAR-100) is 161 MiB
DEADLINE_S = 30 * 60.0  # a whole file, however slowly the bytes arrive
STALE_PART_S = 120.0  # a .part unwritten this long belongs to no live download (reads time out)


class DownloadFailed(Exception):
    """Internal: a download that did not complete; callers turn it into a DataNotFoundError."""


def cache_root() -> Path:
    return Path.home() / ".cache" / "reslab"


def search_dirs(subdir: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders to look in, in priority order (see the module docstring)."""
    dirs: list[Path] = []
    if data_dir is not None:
        root = expand(data_dir, "--data-dir")
        if not root.is_dir():
            raise DataNotFoundError(
                f"data folder {root} does not exist or is not a folder; "
                "check the path given to --data-dir"
            )
        dirs += [root, root / subdir]
    if env := os.environ.get("RESLAB_DATA"):
        dirs.append(expand(env, "RESLAB_DATA") / subdir)
    dirs.append(cache_root() / subdir)
    dirs += [system / subdir for system in SYSTEM_DIRS]
    return dirs


def download_dir(subdir: str) -> Path:
    """The first writable of ``$RESLAB_DATA/SUBDIR`` and ``~/.cache/reslab/SUBDIR`` (created)."""
    candidates = [cache_root() / subdir]
    if env := os.environ.get("RESLAB_DATA"):
        candidates.insert(0, expand(env, "RESLAB_DATA") / subdir)
    for folder in candidates:
        with suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
    raise DataNotFoundError(
        f"no writable folder to download {subdir} into (tried {', '.join(map(str, candidates))}); "
        "set RESLAB_DATA to a writable folder"
    )


def download(
    url: str,
    dest: Path,
    *,
    verify: Callable[[Path], None] | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
    deadline: float = DEADLINE_S,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> None:
    """Download ``url`` to ``dest`` atomically; ``verify(temp_path)`` runs before the rename.

    ``timeout`` bounds each read, ``deadline`` the whole download (seconds); ``max_bytes`` its
    size, as do the Content-Length the server announces. Raises DownloadFailed for network
    trouble, a short or oversized body, or a download past its deadline; verify's own errors
    pass through. The temporary file never outlives the call (SIGTERM raises Interrupted).
    """
    log.info("downloading %s", url)
    started = time.monotonic()
    try:
        with _term_interrupts(url), urllib.request.urlopen(url, timeout=timeout) as response, \
                atomic_output(dest) as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total is not None and total > max_bytes:
                raise DownloadFailed(f"the server announces {total:,} bytes, more than the "
                                     f"{max_bytes:,} this file can be")
            limit = total or max_bytes
            done = 0
            while chunk := response.read1(CHUNK):  # one read: the deadline is checked often
                done += len(chunk)
                if done > limit:
                    raise DownloadFailed(f"more than the {limit:,} bytes "
                                         f"{'announced' if total else 'this file can be'} "
                                         "arrived; stopped")
                if time.monotonic() - started > deadline:
                    raise DownloadFailed(f"not finished after {deadline:.0f} s ({done:,} "
                                         f"bytes); the server is too slow, try again later")
                out.write(chunk)
                if progress is not None:
                    progress(dest.name, done, total)
            if total is not None and done != total:
                raise DownloadFailed(f"connection closed after {done:,} of {total:,} bytes")
            out.flush()
            if verify is not None:
                verify(Path(out.name))
    except ReslabError:
        raise
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as error:
        if isinstance(error, urllib.error.URLError) and not isinstance(error, HTTPError):
            error = error.reason  # the socket error inside, without urllib's wrapping
        raise DownloadFailed(str(error) or type(error).__name__) from None


@contextmanager
def _term_interrupts(url: str) -> Iterator[None]:
    """SIGTERM raises Interrupted while downloading (main thread only), so that the temporary
    file is removed as on Ctrl-C rather than left by a process killed outright."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Interrupted(f"stopped by SIGTERM while downloading {url}; nothing kept: run the "
                          "command again to download it")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def remove_stale_parts(folder: Path, name: str) -> None:
    """Temporary files of ``name`` that a killed download left (see reslab.io.atomic_path):
    one not written for ``STALE_PART_S`` belongs to no live download."""
    now = time.time()
    for part in folder.glob(f".{glob.escape(name)}.*.part"):
        with suppress(OSError):
            if now - part.lstat().st_mtime > STALE_PART_S:
                part.unlink()


def download_missing(
    subdir: str,
    base_url: str,
    names: list[str],
    *,
    verify: Callable[[str, Path], None],
    progress: ProgressCallback | None,
    missing: Callable[[str], str],
) -> Path:
    """Download each of ``names`` not yet in the download folder; return that folder.

    ``verify(name, temp_path)`` checks each file before it is stored; ``missing(reason)`` builds
    the error message when the network fails.
    """
    target = download_dir(subdir)
    for name in names:
        dest = target / name
        if dest.exists():  # left by an earlier run that stopped between files
            continue
        remove_stale_parts(target, name)
        url = f"{base_url.rstrip('/')}/{name}"
        try:
            download(url, dest, verify=partial(verify, name), progress=progress)
        except DownloadFailed as error:
            raise DataNotFoundError(missing(f"downloading {url} failed: {error}")) from None
    return target


def missing_message(title: str, dirs: list[Path], reason: str, ways: list[str]) -> str:
    """One line: what is missing, where we looked, why download did not help, how to fix it."""
    looked = ", ".join(str(d) for d in dirs)
    return (
        f"{title} not found (looked in {looked}) and {reason}; "
        f"get it one of {len(ways)} ways: " + "; or ".join(ways)
    )
