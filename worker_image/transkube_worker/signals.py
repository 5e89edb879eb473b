"""SIGTERM/SIGINT -> a Terminated exception in the main thread, wherever it is blocked (reading ffmpeg's
output, waiting on transfers, an HTTP call). Unwinding then runs the ordinary cleanup: ffmpeg is stopped, the
transfer manager aborts in-flight multipart uploads, and the caller deletes partial outputs.

The handler raises only while `armed()` and only for the first signal; later ones are just recorded. So the
failure handling and cleanup that run after the armed block can never be cut short by an impatient second
signal (Kubernetes sends one SIGTERM, but a human at a terminal may press Ctrl-C twice).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from .errors import Terminated


class SignalGuard:
    def __init__(self) -> None:
        self.received: str | None = None
        self._armed = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signal.Signals(signum).name
        if self._armed:
            self._armed = False
            raise Terminated(f"stopped by {self.received}")

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Inside the block the first signal raises Terminated; one that arrived earlier raises on entry."""
        self._armed = True
        try:
            if self.received is not None:
                raise Terminated(f"stopped by {self.received}")
            yield
        finally:
            self._armed = False
