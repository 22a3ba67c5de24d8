"""Progress of a long step, as log records the CLI shows: on a terminal one live line
(redrawn), elsewhere (CI logs, bitbake) a line every few seconds."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

LIVE_EVERY = 0.25  # seconds between redraws of the live line
LOG_EVERY = 5.0  # seconds between lines when stderr is not a terminal (the CLI drops the rest)


class Progress:
    """progress(done) with the bytes done so far; TOTAL (0: unknown) gives percentage and ETA."""

    def __init__(self, what: str, total: int = 0) -> None:
        self._what = what
        self._total = total
        self._start = self._due = time.monotonic()  # the first call shows it has begun

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + LIVE_EVERY
        log.info("%s", self.line(done, now), extra={"progress": True})

    def expect(self, total: int) -> None:
        """The total is known now."""
        self._total = total

    def close(self) -> None:
        """The step is over: a live line is taken off the terminal."""
        log.info("", extra={"progress": True, "progress_end": True})

    def line(self, done: int, now: float) -> str:
        elapsed = max(now - self._start, 1e-3)
        rate = done / elapsed
        text = f"{self._what}: {done / 2**20:.0f} MiB, {rate / 2**20:.0f} MiB/s"
        if self._total:
            left = max(self._total - done, 0) / max(rate, 1)
            share = min(100 * done / self._total, 100)
            text = f"{self._what}: {share:.0f} % of {self._total / 2**20:.0f} MiB, "
            text += f"{rate / 2**20:.0f} MiB/s, {left:.0f} s left"
        return text
