"""Progress lines for every phase that can take more than a few seconds (training, evaluation, calibration).

One plain line at a time, printed and flushed, never a carriage return, so a terminal, a log file and a
notebook cell all show the same readable history: `[eval] 320/10954 images (3%), 45.2 images/s, ETA 0:03:55`.
"""
import time

EVERY_SECONDS = 10.0  # a long phase is never silent for longer than this


def format_seconds(seconds):
    """Seconds as h:mm:ss, for progress lines."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts `total` units of work for `label`; update(n) after each piece, finish() at the end.

    A line is printed when EVERY_SECONDS have passed since the last one (or since the start), and by
    finish() when the phase printed any line before or took longer than EVERY_SECONDS, so short phases stay
    quiet. `enabled=False` (e.g. on every rank but 0) prints nothing.
    """

    def __init__(self, label, total, unit="images", enabled=True, every_seconds=EVERY_SECONDS, clock=time.monotonic):
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.every_seconds, self.clock = every_seconds, clock
        self.done = 0
        self.started = self.last = clock()
        self.lines = 0

    def line(self):
        elapsed = max(1e-9, self.clock() - self.started)
        rate = self.done / elapsed
        text = f"[{self.label}] {self.done}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.1f} {self.unit}/s"
        if self.done < self.total and rate > 0:
            text += f", ETA {format_seconds((self.total - self.done) / rate)}"
        return text + (f", {format_seconds(elapsed)} in all" if self.done >= self.total else "")

    def _print(self):
        print(self.line(), flush=True)
        self.last = self.clock()
        self.lines += 1

    def update(self, count=1):
        self.done += count
        if self.enabled and self.clock() - self.last >= self.every_seconds and self.done < self.total:
            self._print()

    def finish(self):
        if self.enabled and (self.lines or self.clock() - self.started >= self.every_seconds):
            self._print()
