"""Nothing is lost silently: spans reach a default BatchSpanProcessor, or are counted."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import aiotrace
from aiotrace._recorder import RECORDER
from tests.cli_support import python


class Counting(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


async def _storm(rounds: int) -> None:
    lock = asyncio.Lock()

    async def worker() -> None:
        for _ in range(rounds):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(10)))


def test_default_batch_processor_loses_nothing() -> None:
    """A lock storm through a default-sized BatchSpanProcessor delivers every span built."""
    exporter = Counting()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # default queue: 2048
    aiotrace.instrument(provider, min_wait=0, min_hold=0, flush_interval=5.0)
    try:
        asyncio.run(_storm(1000))  # 10,000 holds and about as many waits
        aiotrace.flush()
        provider.force_flush()
        stats = aiotrace.stats()
    finally:
        aiotrace.uninstrument()
        provider.shutdown()
    assert stats.spans_built > 15_000
    assert stats.spans_dropped == 0
    assert exporter.count == stats.spans_built


def test_bounded_buffer_counts_exactly_what_it_drops() -> None:
    """With max_buffered set, records beyond the bound are dropped and counted, not lost."""
    exporter = Counting()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20))
    aiotrace.instrument(provider, min_wait=0, min_hold=0, flush_interval=3600, max_buffered=1000)
    try:
        asyncio.run(_storm(300))
        aiotrace.flush()
        provider.force_flush()
        stats = aiotrace.stats()
    finally:
        aiotrace.uninstrument()
        provider.shutdown()
    assert exporter.count == stats.spans_built
    assert stats.spans_dropped == stats.dropped_reasons["buffer full (max_buffered)"] > 0
    assert stats.spans_built + stats.spans_dropped >= 5000


def test_the_collector_reads_a_closed_process_to_the_end(tmp_path: Any) -> None:
    """A process that says goodbye and the collector told to finish at once (no linger):

    what the process sent but the collector had not read yet is still built
    and written. (Cutting it off lost a fifth of a storm's spans, uncounted.)
    """
    from aiotrace._collector import CollectorHandle, Shipping

    trace_file = tmp_path / "t.json"
    collector = CollectorHandle({"linger": 0, "trace_file": str(trace_file)})
    aiotrace.instrument(consumer=Shipping(collector.address), min_wait=0, min_hold=0, tasks=False)
    try:
        asyncio.run(_storm(2000))
        operations = aiotrace.stats().operations
    finally:
        aiotrace.uninstrument()  # everything shipped, connection closed
    report = collector.finish()
    assert report is not None
    stats = report["stats"]
    assert stats["spans_built"] > 35_000
    assert stats["spans_built"] == stats["spans_written"]
    assert stats["spans_dropped"] == 0
    assert not any("still running" in note for note in report.get("notes", []))
    assert operations > 0


def test_what_a_process_ships_or_loses_is_in_its_stats(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Under ``aiotrace run`` the collector builds the spans: ``stats()`` said 0 of everything.

    Shipped operations are counted; so are those lost with the collector,
    and the loss is said again at the end, the one count nobody else has.
    """
    import socket

    from aiotrace._collector import CollectorHandle, Shipping

    collector = CollectorHandle({"linger": 0, "trace_file": str(tmp_path / "t.json")})
    aiotrace.instrument(consumer=Shipping(collector.address), min_wait=0, min_hold=0, tasks=False)
    try:
        asyncio.run(_storm(50))
        assert aiotrace.flush()
        shipped = aiotrace.stats()
    finally:
        aiotrace.uninstrument()
    report = collector.finish()
    assert report is not None
    assert shipped.spans_built == 0  # built over there ...
    assert shipped.shipped == report["stats"]["spans_built"] > 500  # ... and counted here
    assert shipped.lost == 0

    # A collector that is gone: everything recorded from then on is lost, counted.
    address = str(tmp_path / "gone.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen()
    shipping = Shipping(address)
    accepted, _ = listener.accept()
    accepted.close()
    listener.close()
    with caplog.at_level(logging.WARNING, logger="aiotrace"):
        aiotrace.instrument(consumer=shipping, min_wait=0, min_hold=0, tasks=False)
        try:
            asyncio.run(_storm(50))
            aiotrace.flush()
            lost = aiotrace.stats()
        finally:
            aiotrace.uninstrument()
    assert lost.shipped == 0
    assert lost.lost > 500
    assert f"{lost.lost} recorded operation(s) and task(s)" in caplog.text


class Slow:
    """A consumer that lags (a collector or exporter): ``delay`` seconds a batch.

    It notes how many records were still buffered each time it was called.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.consumed = 0
        self.buffered: list[int] = []

    def consume(self, records: list[tuple[Any, ...]]) -> None:
        self.buffered.append(len(RECORDER.buffer))
        self.consumed += len(records)
        time.sleep(self.delay)

    def flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        pass


HIGH_WATER = 500


@pytest.fixture
def low_high_water() -> Iterator[None]:
    """A buffer whose high-water mark a small storm passes many times over."""
    saved = RECORDER.high_water
    RECORDER.high_water = HIGH_WATER
    yield
    RECORDER.high_water = saved


def test_a_slow_consumer_slows_the_program_instead_of_growing_the_buffer(
    low_high_water: None,
) -> None:
    """Past four times the high-water mark, the recording thread waits for the pipeline.

    The consumer here takes 100 ms a batch. The buffer must stay near its
    bound while every record still arrives.
    """
    slow = Slow(0.1)
    aiotrace.instrument(consumer=slow, min_wait=0, min_hold=0, tasks=False)
    try:
        asyncio.run(_storm(1000))  # about 20,000 records
        recorded = aiotrace.stats().operations
    finally:
        aiotrace.uninstrument()
    assert recorded > 0
    assert slow.consumed > 15_000
    assert max(slow.buffered) <= 4 * HIGH_WATER + 10  # unchecked, most of the storm


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_the_pipeline_is_busy_waits_a_moment_not_for_the_pipeline() -> None:
    """The pipeline's thread stops for a fork; one deep in a slow write is not waited for.

    The fork goes on after ``FORK_PATIENCE``, and the records recorded
    after it still reach the consumer (through the thread started again).
    """
    from aiotrace._pipeline import Pipeline

    slow = Slow(1.5)  # one batch takes longer than a fork waits
    aiotrace.instrument(consumer=slow, min_wait=0, min_hold=0, tasks=False)
    try:
        asyncio.run(_storm(10))
        deadline = time.monotonic() + 10
        while not slow.buffered and time.monotonic() < deadline:  # the thread is in consume()
            time.sleep(0.01)
        assert slow.buffered
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked_in = time.monotonic() - started
        os.waitpid(pid, 0)
        before = slow.consumed
        asyncio.run(_storm(10))
        deadline = time.monotonic() + 10
        while slow.consumed == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.consumed > before  # delivered by the pipeline's thread, running again
    finally:
        aiotrace.uninstrument()
    assert forked_in < Pipeline.FORK_PATIENCE + 0.75 < slow.delay


def test_waiting_for_the_pipeline_is_not_reported_as_the_program_blocking_its_loop(
    low_high_water: None,
) -> None:
    """Back-pressure blocks the loop's thread inside aiotrace: not a finding against the user.

    Each wait for the slow consumer lasts about 0.3 s, past the 0.2 s block
    threshold; the threshold is kept above the stalls a loaded machine
    gives any thread (a traced session of this suite, two workers on two
    cores), which would be reported, rightly, as blocks.
    """
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    diagnoser = Diagnoser(
        DiagnosisConfig(block_threshold=0.2, dump_signals=False, leaks_at_exit=False), None
    )
    aiotrace.instrument(consumer=Slow(0.3), min_wait=0, min_hold=0, tasks=False)
    diagnoser.start()
    try:
        asyncio.run(_storm(1000))
    finally:
        diagnoser.finish(at_exit=False)
        aiotrace.uninstrument()
    # Waiting for the pipeline would be charged to the line that recorded: the
    # ``async with lock`` in _storm. A stall of the whole machine (a traced run
    # of this suite on two busy cores: once 231 ms) is a block between
    # callbacks, reported rightly ("at test_delivery.py:260 in a callback").
    first = _storm.__code__.co_firstlineno
    storm = {f"test_delivery.py:{line} " for line in range(first, first + 10)}
    charged = [f.summary for f in diagnoser.findings if any(at in f.summary for at in storm)]
    assert charged == [], [f.summary for f in diagnoser.findings]


def test_time_spent_waiting_for_the_pipeline_is_not_charged_to_the_next_line() -> None:
    """A block seen in aiotrace's drain counts, if the program goes on blocking, from then.

    Sampled only after the drain is over, a block that began with it was
    charged in full to whatever line of the program ran next.
    """
    from aiotrace._pipeline import Pipeline
    from aiotrace._recorder import Recorder
    from aiotrace.diagnosis import Watchdog, _LoopState, format_stack

    in_drain, leave_drain, in_program, done = (threading.Event() for _ in range(4))

    class Blocking:
        def consume(self, records: list[tuple[Any, ...]]) -> None:
            in_drain.set()
            leave_drain.wait(10)

    def program() -> None:  # the loop's thread: back-pressure, then its own code
        recorder.buffer.append((-1,))  # a record of no kind: encoded as nothing
        pipeline.drain()
        in_program.set()
        done.wait(10)

    class Loop:  # what the watchdog asks of a loop
        def is_closed(self) -> bool:
            return False

        def is_running(self) -> bool:
            return True

    recorder = Recorder()  # not the process's: a traced session's records stay its own
    pipeline = Pipeline(Blocking(), recorder)  # type: ignore[arg-type]  # consume() suffices
    watchdog = Watchdog(report=lambda f: None, blocked=lambda *a: None, block_threshold=0.05)
    thread = threading.Thread(target=program)
    thread.start()
    try:
        assert in_drain.wait(10)
        loop = Loop()
        state = _LoopState(sent=time.monotonic() - 1.0, pending=True, thread_id=thread.ident)
        watchdog._loops[id(loop)] = (loop, state)
        watchdog._tick()  # a ping a second late, the thread in aiotrace's drain
        assert not state.blocked
        leave_drain.set()
        assert in_program.wait(10)
        watchdog._tick()  # the program's own line, just now: not yet a block
        assert not state.blocked
        time.sleep(0.06)
        watchdog._tick()  # the program's line, past the threshold: a block of its own
        assert state.blocked
        assert any("done.wait(10)" in line for line in format_stack(state.sample))  # its line
    finally:
        leave_drain.set()
        done.set()
        thread.join(10)


def test_a_pipeline_that_stays_behind_is_waited_for_less_each_time_then_not_at_all(
    low_high_water: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Each wait that times out halves the next; after five the program stops waiting.

    A slow moment therefore costs one wait and memory stays bounded, while a
    pipeline stuck for good cannot stall the program for ever. Every time-out
    is counted, the first logged, and still every record arrives.
    """
    from aiotrace._pipeline import Pipeline

    monkeypatch.setattr(Pipeline, "PATIENCE", 0.1)
    slow = Slow(0.5)  # a batch takes longer than any wait
    aiotrace.instrument(consumer=slow, min_wait=0, min_hold=0, tasks=False)
    try:
        with caplog.at_level(logging.WARNING, logger="aiotrace"):
            asyncio.run(_storm(1000))
        timeouts = aiotrace.stats().pressure_timeouts
        aiotrace.flush()
        buffered = aiotrace.stats().buffered
    finally:
        aiotrace.uninstrument()
    # 0.1, 0.05, 0.025, 0.0125 and 0.00625 s; then 0: no wait, no time-out.
    assert timeouts == 5
    assert len([r for r in caplog.records if "did not catch up" in r.getMessage()]) == 1
    assert buffered == 0
    assert slow.consumed > 15_000


AT_EXIT = """\
import asyncio
import atexit
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import aiotrace

exported = []


class Keep(SpanExporter):
    def export(self, spans):
        exported.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS


async def contend(tag):
    lock = asyncio.Lock()

    async def worker():
        async with lock:
            await asyncio.sleep(0.002)

    await asyncio.gather(worker(), worker())


def clean_up():
    asyncio.run(contend("at exit"))


atexit.register(lambda: print("exported at last:", len(exported)))  # the last to run
if sys.argv[1] == "before":
    atexit.register(clean_up)
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(Keep()))
trace.set_tracer_provider(provider)
aiotrace.instrument(min_wait=0, min_hold=0)
if sys.argv[1] == "after":
    atexit.register(clean_up)
asyncio.run(contend("main"))
aiotrace.flush()
print("exported by main:", len(exported))
"""


@pytest.mark.parametrize("registered", ["before", "after"])
def test_what_asyncio_does_after_the_flush_at_exit_is_not_lost_silently(
    tmp_path: Any, registered: str
) -> None:
    """``atexit`` runs handlers last in, first out: one registered before
    ``instrument()`` runs after aiotrace's flush at exit, and what it records goes
    nowhere. That is said, once; one registered after is traced as any code."""
    (tmp_path / "at_exit.py").write_text(AT_EXIT)
    result = python(tmp_path / "at_exit.py", registered, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warning = "aiotrace: asyncio ran after aiotrace's last flush, in an atexit handler"
    by_main, at_last = (int(line.split(": ")[1]) for line in result.stdout.splitlines())
    assert by_main > 0
    if registered == "before":
        assert result.stderr.count(warning) == 1
        assert at_last == by_main
    else:
        assert warning not in result.stderr
        assert at_last == 2 * by_main  # clean_up did as main did, and was delivered


NESTED_DELIVERIES = """
import os
import signal
import signal
import sys

from aiotrace._session import EXIT_DELIVERY, SIGTERM_DELIVERY

how, nested = sys.argv[1:]
delivery = SIGTERM_DELIVERY if how == "sigterm" else EXIT_DELIVERY


def outer(value: int) -> None:
    print("outer", value, flush=True)


def inner(value: int) -> None:
    print("inner", value, flush=True)


delivery.install(outer)
delivery.install(inner)
if nested == "restored":
    delivery.restore(inner)  # the inner session ended: the outer one still delivers
if how == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
else:
    os._exit(3)
"""


@pytest.mark.parametrize("how", ["sigterm", "os_exit"])
@pytest.mark.parametrize("nested", ["installed", "restored"])
def test_deliveries_nest_innermost_first_and_an_inner_one_leaves_the_outer(
    tmp_path: Any, how: str, nested: str
) -> None:
    """``pytest --aiotrace`` under ``aiotrace run``: both deliver, the plugin's first
    (it ends the running test's spans), then the run's; once the plugin's session is
    over, its restore leaves the run's in place."""
    (tmp_path / "nested.py").write_text(NESTED_DELIVERIES)
    result = python(tmp_path / "nested.py", how, nested, cwd=tmp_path)
    value = 15 if how == "sigterm" else 3
    expected = ["inner", "outer"] if nested == "installed" else ["outer"]
    assert result.stdout.split() == [word for name in expected for word in (name, str(value))]
    assert result.returncode == (-signal.SIGTERM if how == "sigterm" else 3)
