"""Move records off the hot path: a thread drains the buffer to a consumer.

The pipeline thread wakes every ``flush_interval`` seconds, or sooner when the
buffer passes its high-water mark, encodes the records as plain data (see
``_wire``) and hands them to a :class:`Consumer`:

* :class:`Building` assembles spans right here and gives them to a
  :class:`Sink` (the user's TracerProvider, or aiotrace's own exporters);
* ``aiotrace._collector.Shipping`` sends them to a collector process, which
  builds and exports them on another core.

Nothing is dropped by default: if records arrive faster than they are
consumed, the thread that finds the buffer at four times its high-water mark
drains it itself, slowing the program rather than losing spans (set
``max_buffered`` to bound memory and count drops instead).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aiotrace import _fork, _threads
from aiotrace._assemble import Assembler, SpanDraft
from aiotrace._recorder import LOGGER, RECORDER, Recorder, log_failure
from aiotrace._wire import Encoder

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Sink(Protocol):
    """Where span drafts go: a TracerProvider, OTLP, a trace file, memory."""

    def export(self, drafts: list[SpanDraft]) -> None:
        """Deliver a batch; count what is exported or dropped in ``RECORDER.stats``."""

    def flush(self, timeout: float) -> bool:
        """Push out anything buffered; False if it did not finish in time."""

    def shutdown(self) -> None:
        """Flush and release resources; the sink is not used afterwards."""


class Consumer(Protocol):
    """What the pipeline hands encoded records to."""

    def consume(self, records: list[tuple[Any, ...]]) -> None:
        """Take a batch of wire records, in order."""

    def flush(self, timeout: float) -> bool:
        """Deliver everything consumed so far."""

    def shutdown(self, timeout: float) -> None:
        """Deliver everything and release resources."""


class Discard:
    """A :class:`Consumer` that drops every batch: for records only a tap wants."""

    def consume(self, records: list[tuple[Any, ...]]) -> None:
        pass

    def flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        pass


class Building:
    """Assembles spans in this process and exports them to a :class:`Sink`."""

    def __init__(self, sink: Sink, recorder: Recorder = RECORDER) -> None:
        self.sink = sink
        self._recorder = recorder
        self.assembler = Assembler(recorder.stats)
        self.on_drafts: list[Callable[[list[SpanDraft]], None]] = []

    def consume(self, records: list[tuple[Any, ...]]) -> None:
        self.assembler.stats = self._recorder.stats  # reset by each instrument()
        drafts = self.assembler.process(records)
        if not drafts:
            return
        for hook in self.on_drafts:
            hook(drafts)
        try:
            self.sink.export(drafts)
        except Exception as exc:  # a sink must not kill the pipeline
            self._recorder.stats.export_failures += 1
            self._recorder.stats.drop(len(drafts), "sink raised")
            log_failure(LOGGER.warning, "aiotrace: span sink failed: %s", exc, exc=exc)

    def flush(self, timeout: float) -> bool:
        return self.sink.flush(timeout)

    def shutdown(self, timeout: float) -> None:
        self.assembler.finish()
        try:
            self.sink.flush(timeout)
        finally:
            self.sink.shutdown()


class Pipeline:
    """Drains :class:`Recorder` records through an :class:`Encoder` to a consumer."""

    def __init__(
        self,
        consumer: Consumer,
        recorder: Recorder = RECORDER,
        interval: float = 0.2,
        encoder: Encoder | None = None,
        taps: Sequence[Callable[[list[tuple[Any, ...]]], None]] = (),
    ) -> None:
        self.consumer = consumer
        self._recorder = recorder
        self._interval = interval
        # A nested pipeline feeding the same receiver must share its encoder:
        # the receiver knows sites and primitives by the numbers it gave them.
        self.encoder = self._encoder = encoder if encoder is not None else Encoder(recorder)
        self._taps = tuple(taps)
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._pid = os.getpid()
        self._patience = self.PATIENCE
        self._fork_paused = False
        self._generation = 0
        """A thread runs while the generation it was started in lasts."""

    def start(self) -> None:
        """Start the background thread (a daemon: it never keeps a program alive)."""
        self._recorder.set_pressure_handler(self._pressure)
        self._thread = _threads.thread(self._run, "aiotrace-pipeline", self._generation)
        self._thread.start()
        _fork.pause_for_forks(self)

    FORK_PATIENCE: ClassVar[float] = 0.25
    """Seconds a fork waits for the thread to stop.

    It may be writing to a slow consumer, or waiting for a lock another
    library's fork hook took first (``logging``'s, ``concurrent.futures``'):
    a fork is then delayed this long, and goes on with the thread running.
    """

    def _stop_thread(self, timeout: float | None, for_fork: bool = False) -> None:
        """End the running thread's generation and wait for it, at most ``timeout``.

        A thread still busy past the timeout ends after its drain; a thread
        started meanwhile drains too, one at a time (the drain lock). Before a
        fork, waited for without a blocking acquire (``_threads.wait_ended``).
        """
        thread, self._thread = self._thread, None
        if thread is not None:
            self._generation += 1
            self._wake.set()
            if thread is not threading.current_thread():
                if for_fork and timeout is not None:
                    _threads.wait_ended(thread, timeout)
                else:
                    thread.join(timeout)

    def pause_for_fork(self) -> bool:
        """Stop the thread, without draining: the records stay buffered (see ``_fork``)."""
        if self._thread is None or self._thread is threading.current_thread():
            return False
        self._fork_paused = True  # resumed after, whatever the wait below meets
        self._stop_thread(self.FORK_PATIENCE, for_fork=True)  # still busy: the fork is warned of
        return True

    def resume_after_fork(self) -> None:
        if self._fork_paused:
            self._fork_paused = False
            self.start()

    def pause(self) -> None:
        """Deliver what is buffered and stop the thread; the consumer stays open."""
        self._stop_thread(None)
        self._recorder.set_pressure_handler(None)
        self.drain()

    def resume(self) -> None:
        """Start again after :meth:`pause`."""
        self.start()

    def after_fork(self) -> None:
        """In a forked child: a thread of our own, and the consumer reconnected."""
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._local = threading.local()
        self._encoder.reset()
        if self._fork_paused or self._thread is not None:  # it was running in the parent
            self._fork_paused = False
            self.start()

    def _run(self, generation: int) -> None:
        while generation == self._generation:
            self._wake.wait(self._interval)
            self._wake.clear()
            if generation != self._generation:
                break
            try:
                self.drain()
            except Exception as exc:  # the thread must survive anything
                self._recorder.fail("pipeline", exc)

    PATIENCE: ClassVar[float] = 10.0
    """Seconds a producer first waits for a busy pipeline; halved at each time-out."""

    def _pressure(self) -> None:
        self._wake.set()
        # Back-pressure: past four times the high-water mark the producer waits
        # for the pipeline (which may be blocked on a slow consumer), then
        # drains what is left itself. The program slows; memory stays bounded;
        # nothing is lost. A wait that times out halves the next one: a slow
        # moment (a loaded machine, a collector catching up) costs one wait
        # and leaves memory bounded, while a pipeline stuck for good (an
        # exporter that needs this very thread) stops being waited for after
        # five, and the buffer grows instead. Each time-out is counted and the
        # first one logged: memory is then no longer bounded by the buffer.
        if (
            len(self._recorder.buffer) > 4 * self._recorder.high_water
            and self.drain(timeout=self._patience) < 0
            and self._patience > 0  # at 0, only a try at draining here, without waiting
        ):
            patience = self._patience / 2
            self._patience = patience if patience >= self.PATIENCE / 16 else 0.0
            stats = self._recorder.stats
            stats.pressure_timeouts += 1
            if stats.pressure_timeouts == 1:
                LOGGER.warning(
                    "aiotrace: the span pipeline is behind by %d records and did not catch up "
                    "in time; the program goes on, and buffered records may use more memory "
                    "until it does",
                    len(self._recorder.buffer),
                )

    def drain(self, block: bool = True, timeout: float = -1) -> int:
        """Process everything buffered now; how many records were taken (-1: lock not had)."""
        if getattr(self._local, "draining", False):
            return 0  # a sink that itself used asyncio primitives: do not recurse
        if not self._drain_lock.acquire(blocking=block, timeout=timeout if block else -1):
            return -1
        self._local.draining = True
        taken = 0
        try:
            buffer = self._recorder.buffer
            while buffer:
                batch: list[tuple[Any, ...]] = []
                pop = buffer.popleft
                try:
                    for _ in range(8192):
                        batch.append(pop())
                except IndexError:
                    pass
                taken += len(batch)
                for tap in self._taps:
                    tap(batch)
                self.consumer.consume(self._encoder.encode(batch))
        finally:
            self._local.draining = False
            self._drain_lock.release()
        return taken

    def flush(self, timeout: float = 30.0) -> bool:
        """Build and deliver everything recorded so far."""
        self.drain()
        return self.consumer.flush(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the thread, deliver what is left, shut the consumer down."""
        self._stop_thread(timeout)
        self._recorder.set_pressure_handler(None)
        self.drain()
        self.consumer.shutdown(timeout)
