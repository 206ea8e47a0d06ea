"""Batch embedding inference across concurrent requests.

Each gRPC worker thread embeds one utterance at a time. On CPU a forward pass over one
utterance leaves most of the matrix units idle, and the GE2E LSTM runs its partials as
one batch anyway, so several requests arriving together are cheaper as one forward pass.
`BatchingEncoder` wraps any SpeakerEncoder: `embed()` from many threads is queued, a single
worker thread waits at most `max_wait_ms` after the first queued utterance for others (or
until `max_batch` are queued), then calls `inner.embed_batch` once and hands each caller
its own result. An idle server adds no latency beyond that bounded wait.

Failures stay per request: if the batch call raises (for example one utterance is empty),
every utterance of that batch is embedded again on its own, so one bad request cannot fail
the others; its caller gets its own error. If the worker is gone, `embed` raises
Unavailable, never returns a made-up embedding.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from purchase_guard.errors import Unavailable
from purchase_guard.voice.encoder import Embedding, Samples, SpeakerEncoder


@dataclass(frozen=True)
class _Job:
    samples: Samples
    result: Future[Embedding] = field(default_factory=Future)


@dataclass(frozen=True)
class BatchStats:
    """Counters for the metrics endpoint and the benchmark."""

    batches: int
    utterances: int
    largest_batch: int


class BatchingEncoder:
    """A SpeakerEncoder whose `embed` calls from concurrent threads share model calls."""

    def __init__(
        self,
        inner: SpeakerEncoder,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        result_timeout_s: float = 60.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.inner = inner
        # Same name and dim as the inner model: batching does not change the embedding's
        # meaning, so voiceprints and thresholds stay valid.
        self.name = inner.name
        self.dim = inner.dim
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.result_timeout_s = result_timeout_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._closed = threading.Event()
        self._stats_lock = threading.Lock()
        self._batches = 0
        self._utterances = 0
        self._largest = 0
        self._worker = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ SpeakerEncoder

    def embed(self, samples_16k: Samples) -> Embedding:
        if self._closed.is_set() or not self._worker.is_alive():
            raise Unavailable("speaker encoder is shut down")
        job = _Job(samples_16k)
        self._queue.put(job)
        try:
            return job.result.result(timeout=self.result_timeout_s)
        except TimeoutError as exc:
            job.result.cancel()
            raise Unavailable("speaker encoder did not answer in time") from exc

    def embed_batch(self, batch: Sequence[Samples]) -> list[Embedding]:
        # A caller that already has several utterances (enrollment, evaluation) batches
        # them itself; queueing them would only add the wait.
        return self.inner.embed_batch(batch)

    # ------------------------------------------------------------------ lifecycle

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after the queued jobs; later `embed` calls raise Unavailable."""
        self._closed.set()
        self._queue.put(None)
        self._worker.join(timeout_s)

    def stats(self) -> BatchStats:
        with self._stats_lock:
            return BatchStats(self._batches, self._utterances, self._largest)

    # ------------------------------------------------------------------ worker

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        stop = False
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
        return jobs, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._collect(first)
            live = [j for j in jobs if j.result.set_running_or_notify_cancel()]
            if live:
                self._serve(live)
            if stop:
                break
        # Anything still queued after close is failed, not dropped silently.
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.result.set_running_or_notify_cancel():
                job.result.set_exception(Unavailable("speaker encoder is shut down"))

    def _serve(self, jobs: list[_Job]) -> None:
        with self._stats_lock:
            self._batches += 1
            self._utterances += len(jobs)
            self._largest = max(self._largest, len(jobs))
        try:
            results = self.inner.embed_batch([j.samples for j in jobs])
        except Exception as exc:  # any failure: retry one by one so each caller gets its own outcome
            if len(jobs) == 1:
                jobs[0].result.set_exception(exc)
                return
            for job in jobs:
                self._serve_one(job)
            return
        if len(results) != len(jobs):
            for job in jobs:
                job.result.set_exception(Unavailable("speaker encoder returned a wrong number of embeddings"))
            return
        for job, emb in zip(jobs, results, strict=True):
            job.result.set_result(emb)

    def _serve_one(self, job: _Job) -> None:
        try:
            job.result.set_result(self.inner.embed(job.samples))
        except Exception as exc:  # handed to the caller's thread, where it is raised
            job.result.set_exception(exc)
