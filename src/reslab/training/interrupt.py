"""Stopping a run cleanly: the first SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after
the step it is taking; a second one stops at once (``KeyboardInterrupt``), leaving the last
good checkpoint as it was."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from reslab.errors import Interrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Installed for the span of a run (main thread only; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._at_once: Callable[[str], str] | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # the second one: no more waiting
            raise KeyboardInterrupt
        self.signal = signum
        if self._at_once is not None:
            raise Interrupted(self._at_once(self.name))

    @contextmanager
    def at_once(self, message: Callable[[str], str]) -> Iterator[None]:
        """Within this block the first signal raises ``Interrupted(message(signal name))`` at
        once, rather than waiting for the block to ask: for a phase that saves nothing and
        that a resume redoes whole (the final test)."""
        if self.requested:
            raise Interrupted(message(self.name))
        self._at_once = message
        try:
            yield
        finally:
            self._at_once = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
