"""What an embedding run did, and what limited it: the lines its summary prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class EmbedSummary:
    model: str
    embedded: int = 0
    text_only: int = 0
    #: Of `text_only`: listings whose image failed (counted in `failed` too), embedded
    #: from their title meanwhile.
    image_failed_text_only: int = 0
    skipped: int = 0
    failed: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    #: Time spent in inference: near `seconds` when the model, not I/O, is the limit.
    model_seconds: float = 0.0
    #: Time the job could claim no more work because earlier batches' writes still ran:
    #: a database that cannot keep up (index inserts, locks) rather than the model.
    write_wait_seconds: float = 0.0
    cache_hits: int = 0
    #: The precision the model ran in, e.g. 'bfloat16 autocast'.
    precision: str | None = None
    #: Batches embedded at once (`model_seconds` adds up their times).
    streams: int = 1
    #: Listings still pending when the run stopped claiming at its time budget
    #: (EmbedSettings.max_seconds); None when it did not stop early.
    left_for_later: int | None = None
    #: Connections the database dropped during the run, each replaced by a new one.
    reconnects: int = 0
    #: Connections writing vectors at once.
    writers: int = 1
    #: What the run did with the model's HNSW index (embedder/index.py), and the seconds
    #: its build after the load took (None: it was kept and filled as vectors came).
    index: str | None = None
    index_seconds: float | None = None
    batch_size: int | None = None
    #: Seconds the first (grey) batch took through a compiled model: the compile.
    compile_seconds: float | None = None

    @property
    def not_embedded(self) -> int:
        """Listings that failed and have no vector from this run."""
        return sum(self.failed.values()) - self.image_failed_text_only

    @property
    def rate(self) -> float:
        return (self.embedded + self.not_embedded) / self.seconds if self.seconds else 0.0

    @property
    def model_busy(self) -> float:
        """The share of the job's time the model's streams were embedding, on average."""
        return self.model_seconds / (self.seconds * self.streams) if self.seconds else 0.0

    @property
    def write_wait(self) -> float:
        return self.write_wait_seconds / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        failed = ", ".join(f"{stage} {n}" for stage, n in sorted(self.failed.items())) or "none"
        waited = (
            f", waiting for database writes {self.write_wait:.0%}"
            if self.write_wait >= 0.05
            else ""
        )
        meanwhile = (
            f", {self.image_failed_text_only} of them as their image failed"
            if self.image_failed_text_only
            else ""
        )
        if not (self.embedded or self.failed or self.skipped or self.reconnects):
            return [
                f"model {self.model}: embedded 0, nothing pending",
                *([self._stopped_early] if self.left_for_later is not None else []),
            ]
        return [
            f"model {self.model}: embedded {self.embedded} ({self.text_only} text-only"
            f"{meanwhile}), skipped {self.skipped}, failed {sum(self.failed.values())} ({failed})",
            f"{self.rate:.1f} listings/s over {self.seconds:.1f} s "
            f"({self._busy_subject} busy {self.model_busy:.0%} of it{waited}); "
            f"{self.cache_hits} images from the local cache",
            *([f"precision {self.precision}"] if self.precision else []),
            *([self._compiled] if self.compile_seconds is not None else []),
            *([self._stopped_early] if self.left_for_later is not None else []),
            *([self._reconnected] if self.reconnects else []),
            *([self._index_built] if self.index_seconds is not None else []),
        ]

    @property
    def _compiled(self) -> str:
        return (
            f"compiled in {self.compile_seconds:.1f} s, batches of {self.batch_size}"
            " (torch's cache makes later runs' compile shorter)"
        )

    @property
    def _index_built(self) -> str:
        return f"search index {self.index}: {self.index_seconds:.1f} s"

    @property
    def _reconnected(self) -> str:
        times = "once" if self.reconnects == 1 else f"{self.reconnects} times"
        return f"the database dropped a connection {times}: reconnected, nothing lost"

    @property
    def _stopped_early(self) -> str:
        return (
            f"stopped at its time budget: about {self.left_for_later} listings left"
            " for the next run"
        )

    @property
    def _busy_subject(self) -> str:
        return f"the model's {self.streams} streams" if self.streams > 1 else "the model"
