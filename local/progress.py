"""Rate / ETA log lines for long loops (readable in log files, unlike progress bars)."""
import logging
import time


class ProgressLog:
    """Logs `done/total, audio hours, items/s, x real time, ETA` at most every `interval` seconds."""

    def __init__(self, what: str, total: int, interval: float = 10.0) -> None:
        self.what = what
        self.total = total
        self.interval = interval
        self.done = 0
        self.audio_seconds = 0.0
        self.start = time.monotonic()
        self.last_log = self.start

    def update(self, audio_seconds: float = 0.0, count: int = 1) -> None:
        self.done += count
        self.audio_seconds += audio_seconds
        now = time.monotonic()
        if now - self.last_log >= self.interval and self.done < self.total:
            self.last_log = now
            self._log(now)

    def finish(self) -> float:
        """Log the final line; returns the elapsed seconds."""
        now = time.monotonic()
        self._log(now)
        return now - self.start

    def _log(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        logging.info(
            f"{self.what}: {self.done}/{self.total} ({100.0 * self.done / max(self.total, 1):.0f}%), "
            f"{self.audio_seconds / 3600:.3f} h audio, {rate:.1f}/s, "
            f"{self.audio_seconds / elapsed:.0f}x real time, "
            + (f"ETA {eta:.0f} s" if self.done < self.total else f"took {elapsed:.1f} s")
        )
