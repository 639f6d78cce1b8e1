"""Progress of long work on stderr: a bar on a terminal, timed lines in a log."""

from __future__ import annotations

import contextlib
import sys
import time

#: Seconds between progress lines where stderr is not a terminal (a CI log, cron mail).
DEFAULT_EVERY = 30.0


class ProgressLines:
    """`progress(done, failed, total)` writes a line at most every `every` seconds, the
    first `every` seconds after it was made: done of total, failures, rate and time
    left. The last call (all done) writes nothing: a summary follows it."""

    def __init__(self, what: str, every: float, write, clock=time.monotonic) -> None:
        self.what = what
        self.every = every
        self.write = write
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def __call__(self, done: int, failed: int, total: int) -> None:
        now = self.clock()
        finished = done + failed
        if finished >= total or now - self.last < self.every:
            return
        self.last = now
        rate = finished / (now - self.started) if now > self.started else 0.0
        line = f"  {self.what}: {finished} of {total} listings ({failed} failed), {rate:.1f}/s"
        if rate > 0:
            line += f", about {duration((total - finished) / rate)} left"
        self.write(line)


def duration(seconds: float) -> str:
    """'40 s', '4 min', '2 h 05 min'."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@contextlib.contextmanager
def embedding_progress(model_name: str, every: float = DEFAULT_EVERY):
    """A progress callback for `run_embedding`: a tqdm bar with listings/s and failures
    on a terminal; elsewhere a line every `every` seconds (BIKEMATCH_PROGRESS_EVERY)."""
    what = f"embedding ({model_name})"
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" listings", desc=what, file=sys.stderr, leave=False)

        def progress(done, failed, total):
            bar.total = total
            bar.n = done + failed
            bar.set_postfix(failed=failed, refresh=False)
            bar.refresh()

        try:
            yield progress
        finally:
            bar.close()
        return
    yield ProgressLines(what, every, lambda line: print(line, file=sys.stderr, flush=True))
