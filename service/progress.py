"""Progress for long-running commands, on stderr so that stdout stays clean for scripts."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


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
    """Prints each stage of a multi-step command with the time it took, and shows that a long
    stage is alive: a stage may come with `share`, a function that says how much of it is done
    (0..1, or None when it cannot tell), read by a thread of its own while the stage runs. On a
    terminal the stage's line becomes a bar redrawn a few times a second; elsewhere (a log, a
    pipe) a line `  <stage> ... 40% after 10s` comes every `every` seconds."""

    def __init__(self, stream=sys.stderr, every: float = 10.0, width: int = 30):
        self.stream = stream
        self.interactive = stream.isatty()
        self.every = every
        self.tick = 0.2 if self.interactive else min(every, 1.0)
        self._shown = 0.0  # when the running stage last printed a line
        self._stage = 0  # counts the stages, so that a share is shown for its own stage
        self.width = width
        self.started = self.stage_started = time.monotonic()
        self.current: str | None = None
        self.share: Callable[[], float | None] | None = None
        self._line_open = False  # the stage's "  name ..." waits for its outcome
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, exc_type, *rest) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._close(failed=exc_type is not None)

    def stage(self, name: str, share: Callable[[], float | None] | None = None) -> None:
        with self._lock:
            self._close(failed=False)
            self.current, self.share, self.stage_started = name, share, time.monotonic()
            self._shown, self._stage = self.stage_started, self._stage + 1
            self.stream.write(f"  {name} ...")
            self.stream.flush()
            self._line_open = True
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="stage-progress",
                                            daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick):
            if not self.interactive and time.monotonic() - self._shown < self.every:
                continue
            stage, measure, share = self._stage, self.share, None
            if measure is not None:
                try:
                    share = measure()
                except Exception:  # a progress display must never fail the command
                    share = None
            if share is not None:
                share = min(max(share, 0.0), 1.0)
            with self._lock:
                if self.current is None or self._stage != stage:
                    continue
                elapsed = time.monotonic() - self.stage_started
                if self.interactive:
                    bar = ""
                    if share is not None:
                        filled = int(share * self.width)
                        bar = f" [{'#' * filled}{'-' * (self.width - filled)}] {share:4.0%}"
                    self.stream.write(f"\r\x1b[K  {self.current} ...{bar} {elapsed:5.1f}s")
                else:
                    done = f" {share:.0%}" if share is not None else ""
                    opened = "\n" if self._line_open else ""
                    self.stream.write(f"{opened}  {self.current} ...{done} after "
                                      f"{elapsed:.0f}s\n")
                    self._line_open, self._shown = False, time.monotonic()
                self.stream.flush()

    def _close(self, failed: bool) -> None:
        if self.current is not None:
            outcome = "failed" if failed else "done"
            took = f"{outcome} in {time.monotonic() - self.stage_started:.1f}s"
            if self.interactive:
                self.stream.write(f"\r\x1b[K  {self.current} ... {took}\n")
            elif self._line_open:
                self.stream.write(f" {took}\n")
            else:
                self.stream.write(f"  {self.current} ... {took}\n")
            self.stream.flush()
            self.current, self.share, self._line_open = None, None, False
