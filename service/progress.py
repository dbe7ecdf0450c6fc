"""Progress for long-running commands, on stderr so that stdout stays clean for scripts."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """A one-line bar per stage on a terminal; a line per stage and per tenth elsewhere."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream = stream
        self.width = width
        self.interactive = stream.isatty()
        self.stage: str | None = None
        self.last_tenth = -1
        self.started = time.monotonic()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.interactive and self.stage is not None:
            self.stream.write("\n")
        self.stream.flush()

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            if self.interactive and self.stage is not None:
                self.stream.write("\n")
            self.stage, self.last_tenth = stage, -1
        share = done / total if total else 1.0
        elapsed = time.monotonic() - self.started
        if self.interactive:
            filled = int(share * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{stage:<10} [{bar}] {share:6.1%} {done:>12,}/{total:,} "
                              f"{elapsed:6.1f}s")
        elif int(share * 10) != self.last_tenth:
            self.last_tenth = int(share * 10)
            self.stream.write(f"{stage}: {done:,}/{total:,} ({share:.0%}) {elapsed:.1f}s\n")
        self.stream.flush()


class StageLog:
    """Prints each stage of a multi-step command with the time the previous one took."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = self.stage_started = time.monotonic()
        self.current: str | None = None

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        self._close(failed=exc_type is not None)

    def stage(self, name: str) -> None:
        self._close(failed=False)
        self.current, self.stage_started = name, time.monotonic()
        self.stream.write(f"  {name} ...")
        self.stream.flush()

    def _close(self, failed: bool) -> None:
        if self.current is not None:
            outcome = "failed" if failed else "done"
            self.stream.write(f" {outcome} in {time.monotonic() - self.stage_started:.1f}s\n")
            self.stream.flush()
            self.current = None
