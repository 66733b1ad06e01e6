"""Paths from the user and from files, checked before any work: outputs that would destroy an
input or cannot be written, inputs that are not regular files (a FIFO would block forever),
and names printed with their control characters escaped so that no file can forge output."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from reslab.errors import ConfigError

NAME_MAX = 255  # bytes in one file name, on every common file system
PATH_MAX = 4096  # bytes in a path the system takes, its final NUL included (Linux)

# The C0 and C1 control characters and DEL: a newline forges a line, ESC drives the terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL |= {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
_CONTROL |= {c: f"\\u{c:04x}" for c in (0x2028, 0x2029)}  # line breaks to some terminals
# Bidirectional controls: they reorder what follows on the line, so a name could show as
# another (an "exe.txt" ending in U+202E "txt.exe").
_CONTROL |= {c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                         *range(0x2066, 0x206A))}


def printable(name: object) -> str:
    """``name`` as text safe to print on one line: control and bidirectional-control
    characters escaped."""
    return str(name).translate(_CONTROL)


def expand(path: str | os.PathLike, option: str) -> Path:
    """``path`` with ``~`` expanded; an unknown ``~user`` is refused rather than kept as is."""
    text = os.fspath(path)
    if "\0" in text:
        raise ConfigError(f"{option} {printable(text)!r} holds a NUL character: give a real path")
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        user = expanded.split(os.sep, 1)[0]
        raise ConfigError(f"{option} {printable(text)}: no user {printable(user[1:])!r} on this "
                          "machine; write the folder out in full")
    if len(os.fsencode(expanded)) >= PATH_MAX:
        raise ConfigError(f"{option} {printable(text)[:80]}...: the path is "
                          f"{len(os.fsencode(expanded)):,} bytes long, longer than the "
                          f"{PATH_MAX - 1:,} the system takes; shorten it")
    path = Path(expanded)
    if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
        raise ConfigError(f"{option} {printable(text)[:80]}...: a name in it is longer than "
                          f"{NAME_MAX} bytes, more than file systems allow; shorten it")
    return path


def is_folder(path: Path) -> bool:
    """``path.is_dir()``, False for any path the system refuses to look at (too long...)."""
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except (OSError, ValueError):
        return False


def check_output(path: str | os.PathLike, option: str, *, suffix: str | None = None,
                 inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """The file ``path`` an option asks to write, refused (ConfigError, one line) when it is a
    folder, lacks ``suffix``, is one of ``inputs`` (files, or folders it would land inside),
    has a name too long or a folder that is missing or not writable."""
    out = expand(path, option)
    shown = printable(out)
    if suffix is not None and out.suffix.lower() != suffix:
        raise ConfigError(f"{option} {shown} must end in {suffix}")
    if is_folder(out):
        raise ConfigError(f"{option} {shown} is a folder: give the file to write")
    for given in inputs:
        source = _expanded(given)
        if _same(out, source):
            raise ConfigError(f"{option} {shown} is an input of this command; writing it would "
                              "destroy it: choose another file")
        if is_folder(source) and _inside(out, source):
            raise ConfigError(f"{option} {shown} is inside {printable(source)}, an input of this "
                              "command: choose a file elsewhere")
    check_folder(out.parent.absolute(), option, shown)
    longest = min(NAME_MAX, _name_max(out.parent)) - 16  # room for the temporary file's affixes
    if len(os.fsencode(out.name)) > longest:
        raise ConfigError(f"{option} {shown}: the file name is too long for this file system "
                          f"(at most {longest} bytes here); choose a shorter one")
    return out


def check_folder(folder: Path, option: str, shown: str) -> None:
    """The folder an output goes into can be made (the writer creates what is missing) and
    written: a file can be created in its nearest existing ancestor (tried, as permissions
    alone do not tell: root, read-only mounts, /proc)."""
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p) or p == p.parent)
    if not is_folder(existing):
        raise ConfigError(f"{option} {shown}: {printable(existing)} is not a folder; choose "
                          "another place")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".reslab-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"{option} {shown}: cannot write in {printable(existing)} "
                          f"({error.strerror or error}); choose another place") from None


def regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` unless it is something other than a regular file (links followed): a FIFO,
    device or socket would block or never end, so it is refused (ConfigError) unopened. A path
    that does not exist is left to the caller's open, which reports it as it always has."""
    path = expand(path, what)
    with suppress(OSError):
        if not stat.S_ISREG(path.stat().st_mode):
            raise ConfigError(f"{printable(path)}: not a regular file (a folder, pipe, device or "
                              f"socket); give the {what} as a file")
    return path


def read_own_file(path: str | os.PathLike, what: str, limit: int = 64 << 20) -> str:
    """The text of a file reslab wrote into its own folder (a report's experiment.json, a
    run's metrics), read only when it still is a regular file of at most ``limit`` bytes: a
    FIFO put in its place would block the read forever, a link to /dev/zero fill the memory.
    Opened without blocking and checked on the open file, so nothing can be swapped in
    between. ``OSError`` as ``open`` raises it when the file is missing; ConfigError when it
    is something else or too big."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{printable(path)}: {what} is not a regular file (a pipe, device "
                              "or socket was put in its place); remove it, or choose another "
                              "folder")
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"{printable(path)}: {what} is over {limit >> 20} MiB, far more than "
                          "reslab writes; the file was replaced: remove it, or choose another "
                          "folder")
    return data.decode("utf-8", errors="replace")


def _expanded(path: str | os.PathLike) -> Path:
    try:
        return Path(path).expanduser()
    except RuntimeError:  # an unknown ~user: the command refuses it where it reads it
        return Path(path)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.parent.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
