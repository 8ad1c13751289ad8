"""Every span name, attribute key and attribute value aiotrace emits.

No other module spells a telemetry string: they import it from here, so the span
model documented in ``docs/spans.md`` is exactly this file. Span names stay
low-cardinality (``asyncio.<Class>.<operation>``); per-instance data goes in
``aiotrace.*`` attributes. Where OpenTelemetry's semantic conventions already
have a key (call site, exceptions) we use it.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------
# Instrumentation scope
# --------------------------------------------------------------------------

SCOPE_NAME: Final = "aiotrace"
"""Instrumentation scope name of every span aiotrace builds."""

# --------------------------------------------------------------------------
# Span names: waits (the task could not proceed) and holds (it owned something)
# --------------------------------------------------------------------------

SPAN_LOCK_ACQUIRE: Final = "asyncio.Lock.acquire"
"""Waiting for an ``asyncio.Lock``; only when ``acquire()`` had to wait."""
SPAN_LOCK_HOLD: Final = "asyncio.Lock.hold"
"""Owning an ``asyncio.Lock``, from acquisition to ``release()``."""
SPAN_SEMAPHORE_ACQUIRE: Final = "asyncio.Semaphore.acquire"
"""Waiting for a permit of an ``asyncio.Semaphore``."""
SPAN_SEMAPHORE_HOLD: Final = "asyncio.Semaphore.hold"
"""Holding one permit of an ``asyncio.Semaphore``."""
SPAN_BOUNDED_SEMAPHORE_ACQUIRE: Final = "asyncio.BoundedSemaphore.acquire"
"""Waiting for a permit of an ``asyncio.BoundedSemaphore``."""
SPAN_BOUNDED_SEMAPHORE_HOLD: Final = "asyncio.BoundedSemaphore.hold"
"""Holding one permit of an ``asyncio.BoundedSemaphore``."""
SPAN_EVENT_WAIT: Final = "asyncio.Event.wait"
"""Blocked in ``asyncio.Event.wait()`` until the event was set."""
SPAN_EVENT_SET: Final = "asyncio.Event.set"
"""Span event on the setter's current span; a span only when nothing was current."""
SPAN_CONDITION_WAIT: Final = "asyncio.Condition.wait"
"""Blocked in ``Condition.wait()`` until notified; re-acquiring the lock is the lock's span."""
SPAN_CONDITION_NOTIFY: Final = "asyncio.Condition.notify"
"""Span event on the notifier's current span (``notify`` and ``notify_all``)."""
SPAN_BARRIER_WAIT: Final = "asyncio.Barrier.wait"
"""Blocked in ``asyncio.Barrier.wait()`` until the barrier released its parties."""
SPAN_BARRIER_ABORT: Final = "asyncio.Barrier.abort"
"""Span event on the aborting task's current span."""
SPAN_BARRIER_RESET: Final = "asyncio.Barrier.reset"
"""Span event on the resetting task's current span."""
SPAN_QUEUE_TASK_DONE: Final = "asyncio.Queue.task_done"
"""Span event on the current span of the task whose ``task_done()`` released ``join()``."""
SPAN_QUEUE_GET: Final = "asyncio.Queue.get"
"""Blocked in ``Queue.get()`` on an empty queue."""
SPAN_QUEUE_PUT: Final = "asyncio.Queue.put"
"""Blocked in ``Queue.put()`` on a full queue."""
SPAN_QUEUE_JOIN: Final = "asyncio.Queue.join"
"""Blocked in ``Queue.join()`` until every item was marked done."""
SPAN_QUEUE_SHUTDOWN: Final = "asyncio.Queue.shutdown"
"""Span event on the current span of the task that shut the queue down (3.13+)."""
SPAN_PRIORITY_QUEUE_GET: Final = "asyncio.PriorityQueue.get"
"""``SPAN_QUEUE_GET`` for a ``PriorityQueue``."""
SPAN_PRIORITY_QUEUE_PUT: Final = "asyncio.PriorityQueue.put"
"""``SPAN_QUEUE_PUT`` for a ``PriorityQueue``."""
SPAN_PRIORITY_QUEUE_JOIN: Final = "asyncio.PriorityQueue.join"
"""``SPAN_QUEUE_JOIN`` for a ``PriorityQueue``."""
SPAN_LIFO_QUEUE_GET: Final = "asyncio.LifoQueue.get"
"""``SPAN_QUEUE_GET`` for a ``LifoQueue``."""
SPAN_LIFO_QUEUE_PUT: Final = "asyncio.LifoQueue.put"
"""``SPAN_QUEUE_PUT`` for a ``LifoQueue``."""
SPAN_LIFO_QUEUE_JOIN: Final = "asyncio.LifoQueue.join"
"""``SPAN_QUEUE_JOIN`` for a ``LifoQueue``."""
SPAN_TASK: Final = "asyncio.Task"
"""A task, from creation to completion; everything the task does nests under it."""
SPAN_FUTURE: Final = "asyncio.Future"
"""A future created by user code, from creation to resolution."""
SPAN_FUTURE_WAIT: Final = "asyncio.Future.wait"
"""A task blocked in ``await future`` until it was resolved."""
SPAN_FUTURE_RESOLVE: Final = "asyncio.Future.resolve"
"""Span event on the resolver's current span when it set a traced future."""

SPAN_RUN: Final = "aiotrace.run"
"""The root span of ``aiotrace run``: the whole program."""
SPAN_PROCESS: Final = "aiotrace.process"
"""A child process of a traced program, traced too (its tasks nest under it)."""
WAIT_SPANS: Final = frozenset(
    {
        SPAN_LOCK_ACQUIRE,
        SPAN_SEMAPHORE_ACQUIRE,
        SPAN_BOUNDED_SEMAPHORE_ACQUIRE,
        SPAN_EVENT_WAIT,
        SPAN_CONDITION_WAIT,
        SPAN_BARRIER_WAIT,
        SPAN_QUEUE_GET,
        SPAN_QUEUE_PUT,
        SPAN_QUEUE_JOIN,
        SPAN_PRIORITY_QUEUE_GET,
        SPAN_PRIORITY_QUEUE_PUT,
        SPAN_PRIORITY_QUEUE_JOIN,
        SPAN_LIFO_QUEUE_GET,
        SPAN_LIFO_QUEUE_PUT,
        SPAN_LIFO_QUEUE_JOIN,
    }
)
"""Spans of a task blocked on a primitive."""
HOLD_SPANS: Final = frozenset({SPAN_LOCK_HOLD, SPAN_SEMAPHORE_HOLD, SPAN_BOUNDED_SEMAPHORE_HOLD})
"""Spans of a task holding a lock or a semaphore permit."""
ACQUIRE_SPANS: Final = frozenset(
    {SPAN_LOCK_ACQUIRE, SPAN_SEMAPHORE_ACQUIRE, SPAN_BOUNDED_SEMAPHORE_ACQUIRE}
)
"""The waits that end in a hold: a holder, not a waker, decides how long they last."""
QUEUE_WAIT_OPERATIONS: Final = {
    SPAN_QUEUE_GET: "get",
    SPAN_QUEUE_PUT: "put",
    SPAN_QUEUE_JOIN: "join",
    SPAN_PRIORITY_QUEUE_GET: "get",
    SPAN_PRIORITY_QUEUE_PUT: "put",
    SPAN_PRIORITY_QUEUE_JOIN: "join",
    SPAN_LIFO_QUEUE_GET: "get",
    SPAN_LIFO_QUEUE_PUT: "put",
    SPAN_LIFO_QUEUE_JOIN: "join",
}
"""A queue's wait span -> the operation that waited."""

SPAN_TEST_SESSION: Final = "pytest.session"
"""The root span of ``pytest --aiotrace``: the whole test session."""
SPAN_TEST_WORKER: Final = "pytest.worker"
"""A pytest-xdist worker process, under the session span; its tests nest under it."""
SPAN_TEST: Final = "pytest.test"
"""One test item, from setup to teardown."""
SPAN_TEST_SETUP: Final = "pytest.setup"
"""A test's setup phase (its fixtures); child of its test span."""
SPAN_TEST_CALL: Final = "pytest.call"
"""A test's call phase (the test function); child of its test span."""
SPAN_TEST_TEARDOWN: Final = "pytest.teardown"
"""A test's teardown phase; child of its test span."""
SPAN_FINDING: Final = "aiotrace.finding"
"""A problem diagnosed (deadlock, hang, leak, exception never retrieved, lock order, loop
blocked); links to the tasks."""
SPAN_LOOP_BLOCKED: Final = "asyncio.loop.blocked"
"""A callback or task step that kept the event loop from running anything else."""
EVENT_LEAK: Final = "aiotrace.leak"
"""Event on a test span: the test left a lock held, a permit taken or a future unresolved."""
EVENT_PRIMITIVE_SUMMARY: Final = "aiotrace.primitive"
"""Event on a run/process/session span: totals for one primitive (by creation site),
below-threshold operations included."""

# --------------------------------------------------------------------------
# Standard (semantic-convention) attribute keys
# --------------------------------------------------------------------------

ATTR_CODE_FUNCTION_NAME: Final = "code.function.name"
"""Function that performed the operation (semconv ``code.function.name``)."""
ATTR_CODE_FILE_PATH: Final = "code.file.path"
"""Source file of the call site (semconv ``code.file.path``)."""
ATTR_CODE_LINE_NUMBER: Final = "code.line.number"
"""Line of the call site (semconv ``code.line.number``)."""
ATTR_EXCEPTION_TYPE: Final = "exception.type"
"""Qualified exception class (semconv)."""
ATTR_EXCEPTION_MESSAGE: Final = "exception.message"
"""``str()`` of the exception (semconv)."""
ATTR_EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
"""Formatted traceback (semconv)."""
EVENT_EXCEPTION: Final = "exception"
"""Span event name for a recorded exception (semconv)."""

# --------------------------------------------------------------------------
# aiotrace attribute keys
# --------------------------------------------------------------------------

ATTR_PRIMITIVE_KIND: Final = "aiotrace.primitive.kind"
"""Class of the primitive: ``Lock``, ``Semaphore``, ``Event`` ..."""
ATTR_PRIMITIVE_ID: Final = "aiotrace.primitive.id"
"""Process-unique number of the primitive instance."""
ATTR_PRIMITIVE_NAME: Final = "aiotrace.primitive.name"
"""``aiotrace.name()`` or ``variable (file:line)`` of where it was created."""
ATTR_PRIMITIVE_SITE: Final = "aiotrace.primitive.site"
"""``file:line`` where the primitive was created."""
ATTR_PRIMITIVE_VIA_SITE: Final = "aiotrace.primitive.via.site"
"""When ``aiotrace.primitive.site`` is a library's line (a pool's ``self._lock =
asyncio.Lock()``): ``file:line`` of the program's own call that led there (``users =
Pool()``). Primitives are counted and reported per creation site and this line."""
ATTR_TASK_NAME: Final = "aiotrace.task.name"
"""``Task.get_name()`` of the task that performed the operation."""
ATTR_OUTCOME: Final = "aiotrace.outcome"
"""How a wait, hold, task or future ended; one of the ``OUTCOME_*`` values."""
ATTR_WAITERS_AHEAD: Final = "aiotrace.waiters_ahead"
"""Tasks already waiting when this wait began."""
ATTR_BLOCKER_TASK: Final = "aiotrace.blocker.task"
"""Task whose hold ended this wait: the last holder the waiter was queued behind."""
ATTR_BLOCKER_SITE: Final = "aiotrace.blocker.site"
"""``file:line`` where that holder acquired it."""
ATTR_WAITERS_DURING: Final = "aiotrace.waiters"
"""On a hold: how many tasks were waiting for the primitive when it was released."""
ATTR_RELEASER_TASK: Final = "aiotrace.releaser.task"
"""On a hold: the task that released it, when not the holder."""
ATTR_SEMAPHORE_VALUE: Final = "aiotrace.semaphore.value"
"""Free permits when the wait began."""
ATTR_SEMAPHORE_CAPACITY: Final = "aiotrace.semaphore.capacity"
"""Initial value (the number of permits) of the semaphore.

On a primitive summary: that of every semaphore made at the site, or
``CAPACITIES_VARY`` when they were made with different values.
"""
CAPACITIES_VARY: Final = -1
ATTR_WAKER_TASK: Final = "aiotrace.waker.task"
"""Task that set the event, notified the condition, fed the queue or resolved the future."""
ATTR_WAKER_SITE: Final = "aiotrace.waker.site"
"""``file:line`` of the waking call."""
ATTR_VIA_SITE: Final = "aiotrace.via.site"
"""On a wait, hold or loop block whose line (``code.*``) is a library's
(``aiohttp/streams.py:716``): ``file:line`` of the program's own call it came from."""
ATTR_WAKER_VIA_SITE: Final = "aiotrace.waker.via.site"
"""The same for the waking call, when ``aiotrace.waker.site`` is a library's line."""
ATTR_WOKEN: Final = "aiotrace.woken"
"""Number of waiters a ``set()``, ``notify()`` or ``put()`` woke."""
ATTR_CONDITION_NOTIFY_N: Final = "aiotrace.condition.n"
"""The ``n`` passed to ``notify(n)``; absent for ``notify_all``."""
ATTR_CONDITION_PREDICATE: Final = "aiotrace.condition.predicate"
"""True when the wait was one round of ``wait_for(predicate)``."""
ATTR_BARRIER_PARTIES: Final = "aiotrace.barrier.parties"
"""Parties the barrier waits for."""
ATTR_BARRIER_INDEX: Final = "aiotrace.barrier.index"
"""Arrival order (the value ``wait()`` returned), 0-based."""
ATTR_QUEUE_SIZE: Final = "aiotrace.queue.size"
"""``qsize()`` when the wait began."""
ATTR_QUEUE_MAXSIZE: Final = "aiotrace.queue.maxsize"
"""``maxsize`` of the queue (0 is unbounded)."""
ATTR_QUEUE_UNFINISHED: Final = "aiotrace.queue.unfinished"
"""Items not yet marked done when ``join()`` began."""
ATTR_TASK_COROUTINE: Final = "aiotrace.task.coroutine"
"""Qualified name of the task's coroutine."""
ATTR_TASK_PARENT: Final = "aiotrace.task.parent"
"""Name of the task that created this one."""
ATTR_FUTURE_ID: Final = "aiotrace.future.id"
"""Process-unique number of a traced future."""
ATTR_FUTURE_TIME_TO_RESOLVE: Final = "aiotrace.future.time_to_resolve_ms"
"""Milliseconds from creation to resolution."""
ATTR_FUTURE_WAITERS: Final = "aiotrace.future.waiters"
"""Tasks that were awaiting the future when it resolved (or at shutdown)."""
ATTR_LINK_KIND: Final = "aiotrace.link.kind"
"""On a link: why the linked span is related, one of the ``LINK_*`` values."""
ATTR_DROPPED: Final = "aiotrace.dropped"
"""On the run/session span: spans aiotrace could not deliver (see ``aiotrace.stats()``)."""
ATTR_INTERNAL_ERRORS: Final = "aiotrace.internal_errors"
"""On the run/session span: internal errors (each disabled a family of tracing)."""
ATTR_BELOW_THRESHOLD: Final = "aiotrace.below_threshold"
"""On the run/session span: operations counted but not spanned (under a threshold)."""
ATTR_OPERATIONS: Final = "aiotrace.operations"
"""On a run span, or a primitive summary: operations observed."""
ATTR_PROGRAM: Final = "aiotrace.program"
"""On the run span: the script or module run (``locks.py``, ``-m app``)."""
ATTR_EXIT_CODE: Final = "aiotrace.exit_code"
"""On the run span: the program's exit status."""
ATTR_ARGV: Final = "process.command_args"
"""On the run span: the program's arguments (semconv ``process.command_args``)."""
ATTR_PID: Final = "process.pid"
"""On run and process spans, and on the resource of each traced process's spans
(semconv ``process.pid``): which process a span comes from."""
ATTR_PARENT_PID: Final = "process.parent_pid"
"""On the resource of each traced process's spans (semconv ``process.parent_pid``)."""
ATTR_TEST_CASE_NAME: Final = "test.case.name"
"""On a test span: the test's node id (semconv ``test.case.name``)."""
ATTR_TEST_CASE_RESULT: Final = "test.case.result.status"
"""On a test span: ``pass`` or ``fail`` (semconv ``test.case.result.status``)."""
ATTR_TEST_SUITE_NAME: Final = "test.suite.name"
"""On the session span: the project (rootdir) name (semconv ``test.suite.name``)."""
ATTR_TEST_SUITE_RUN_STATUS: Final = "test.suite.run.status"
"""On the session span: ``success`` or ``failure`` (semconv ``test.suite.run.status``)."""
ATTR_TEST_OUTCOME: Final = "aiotrace.test.outcome"
"""On a test span: pytest's outcome: passed, failed, error, skipped, xfailed, xpassed,
:data:`TEST_OUTCOME_EXITED` or :data:`TEST_OUTCOME_KILLED`."""
TEST_OUTCOME_EXITED: Final = "os._exit"
"""The test (or the code it ran) ended the pytest process with ``os._exit()``."""
TEST_OUTCOME_KILLED: Final = "killed"
"""The pytest process was killed during the test by SIGTERM or SIGHUP (a CI job's timeout):
the signal is in the span's status."""
ATTR_TEST_PHASE_OUTCOME: Final = "aiotrace.test.phase_outcome"
"""On a phase span: passed, failed or skipped."""
ATTR_TEST_WAIT_MS: Final = "aiotrace.test.wait_ms"
"""On a test span: time its tasks spent waiting on primitives, in milliseconds."""
ATTR_TEST_WAITS: Final = "aiotrace.test.waits"
"""On a test span: how many waits blocked."""
ATTR_XDIST_WORKER: Final = "aiotrace.xdist.worker"
"""On worker and test spans: the pytest-xdist worker id (``gw0``)."""
FINDING_DEADLOCK: Final = "deadlock"
FINDING_HANG: Final = "hang"
FINDING_LEAK: Final = "leak"
FINDING_LOCK_ORDER: Final = "lock order"
FINDING_LOOP_BLOCKED: Final = "loop blocked"
FINDING_UNRETRIEVED: Final = "exception never retrieved"
"""A task (or future) that ended raising, which nothing awaited or asked for its exception."""
FINDING_SWALLOWED: Final = "cancellation swallowed"
"""A task that was cancelled, caught its ``CancelledError`` and ended as if it had not been."""
FINDING_SEVERITY: Final = (
    FINDING_DEADLOCK,
    FINDING_HANG,
    FINDING_LEAK,
    FINDING_UNRETRIEVED,
    FINDING_SWALLOWED,
    FINDING_LOCK_ORDER,
    FINDING_LOOP_BLOCKED,
)
"""Values of ``aiotrace.finding.kind``, most severe first (reports list findings in this order)."""
ATTR_FINDING_KIND: Final = "aiotrace.finding.kind"
"""On a finding span: deadlock, hang, leak, exception never retrieved, cancellation
swallowed, lock order, loop blocked."""
ATTR_FINDING_SUMMARY: Final = "aiotrace.finding.summary"
"""On a finding span: the problem in one line."""
ATTR_FINDING_DETAIL: Final = "aiotrace.finding.detail"
"""On a finding span: the tasks, primitives and lines involved, one per line."""
ATTR_BLOCKED_STACK: Final = "code.stacktrace"
"""On a loop-blocked span: the loop thread's stack as it blocked (semconv ``code.stacktrace``)."""
ATTR_BLOCKED_CALLBACK: Final = "aiotrace.loop.callback"
"""On a loop-blocked span: the callback the loop ran, when it has no frame (``time.sleep``)."""
ATTR_LEAK_KIND: Final = "aiotrace.leak.kind"
"""On a leak event: ``lock held``, ``permit taken`` or ``future unresolved``."""
ATTR_LEAK_DETAIL: Final = "aiotrace.leak.detail"
"""On a leak event: what was left, and by whom, in words."""
ATTR_SUMMARY_WAITS: Final = "aiotrace.waits"
"""In a primitive summary: waits that blocked, spanned or not."""
ATTR_SUMMARY_WAIT_MS: Final = "aiotrace.wait_ms"
"""In a primitive summary: total time waited, in milliseconds."""
ATTR_SUMMARY_MAX_WAIT_MS: Final = "aiotrace.max_wait_ms"
"""In a primitive summary: the longest spanned wait, in milliseconds.

The hot path sums a short wait's time but keeps no maximum: a wait that was
only counted was shorter than ``aiotrace.min_wait_ms``, and may have been
longer than this."""
ATTR_SUMMARY_MIN_WAIT_MS: Final = "aiotrace.min_wait_ms"
"""In a primitive summary: ``min_wait`` in milliseconds; each wait not spanned was shorter."""
ATTR_SUMMARY_HOLDS: Final = "aiotrace.holds"
"""In a primitive summary: holds that were waited for or passed ``min_hold``.

Every hold is one of the primitive's operations (``aiotrace.operations``):
a hold nobody waited for and shorter than ``min_hold`` is counted there only."""
ATTR_SUMMARY_MAX_HOLD_MS: Final = "aiotrace.max_hold_ms"
"""In a primitive summary: the longest spanned hold, in milliseconds (as for waits)."""
ATTR_SUMMARY_MIN_HOLD_MS: Final = "aiotrace.min_hold_ms"
"""In a primitive summary: ``min_hold`` in milliseconds; each hold not spanned was shorter."""
ATTR_SUMMARY_HELD_AT: Final = "aiotrace.held_at"
"""In a primitive summary: the lines a holder was sampled at while others waited, most
sampled first (at most three), each ``app.py:11 in Cache.get: value = await fetch(key)``.

The watchdog (diagnosis on) looks every 10 ms at each lock and semaphore that
has waiters, and notes the line its holder is at: the ``await`` inside the
``async with`` that keeps the others waiting, or the code it is running."""
ATTR_SUMMARY_HELD_AT_SAMPLES: Final = "aiotrace.held_at_samples"
"""In a primitive summary: how many samples found a holder at each ``aiotrace.held_at`` line."""
ATTR_SUMMARY_HELD_SAMPLES: Final = "aiotrace.held_samples"
"""In a primitive summary: every sample of a holder while others waited, all lines."""

# --------------------------------------------------------------------------
# Attribute values
# --------------------------------------------------------------------------

OUTCOME_ACQUIRED: Final = "acquired"
"""The wait ended because the primitive was obtained."""
OUTCOME_RELEASED: Final = "released"
"""A hold ended by ``release()``."""
OUTCOME_CANCELLED: Final = "cancelled"
"""Cancelled (``CancelledError``); not an error status."""
OUTCOME_TIMEOUT: Final = "timeout"
"""Cancelled by ``asyncio.timeout``/``wait_for`` running out."""
OUTCOME_ERROR: Final = "error"
"""Ended by an exception other than cancellation."""
OUTCOME_SET: Final = "set"
"""An event wait ended because the event was set."""
OUTCOME_NOTIFIED: Final = "notified"
"""A condition wait ended because it was notified."""
OUTCOME_PASSED: Final = "passed"
"""A barrier wait ended because all parties arrived."""
OUTCOME_BROKEN: Final = "broken"
"""A barrier wait ended with ``BrokenBarrierError`` (abort or reset)."""
OUTCOME_GOT: Final = "got"
"""A queue ``get()`` received an item."""
OUTCOME_PUT: Final = "put"
"""A queue ``put()`` stored its item."""
OUTCOME_JOINED: Final = "joined"
"""A queue ``join()`` returned: every item was marked done."""
OUTCOME_SHUTDOWN: Final = "shutdown"
"""A queue operation ended with ``QueueShutDown`` (3.13+)."""
OUTCOME_COMPLETED: Final = "completed"
"""A task returned normally."""
OUTCOME_RAISED: Final = "raised"
"""A task ended with an exception other than cancellation (or a hold ended by one)."""
OUTCOME_RESULT: Final = "result"
"""A future was resolved with ``set_result``."""
OUTCOME_EXCEPTION: Final = "exception"
"""A future was resolved with ``set_exception``."""
OUTCOME_PENDING: Final = "pending"
"""Still pending when tracing stopped: a future never resolved, a task still running."""
OUTCOME_COLLECTED: Final = "collected"
"""A future garbage-collected while still pending."""

LINK_BLOCKER: Final = "blocker"
"""Linked span kept the waiter waiting (used by diagnosis for deadlock chains)."""
LINK_HANDOFF: Final = "handoff"
"""Linked hold's release handed the primitive to this waiter: who blocked it."""
LINK_WAKER: Final = "waker"
"""Linked span set the event, notified, fed the queue or resolved the future."""
LINK_RELEASER: Final = "releaser"
"""Linked span is the barrier arrival that released every party."""
LINK_FUTURE: Final = "future"
"""Linked span is the future this wait awaited."""

KIND_LOCK: Final = "Lock"
"""``aiotrace.primitive.kind`` of ``asyncio.Lock``."""
KIND_SEMAPHORE: Final = "Semaphore"
"""``aiotrace.primitive.kind`` of ``asyncio.Semaphore``."""
KIND_BOUNDED_SEMAPHORE: Final = "BoundedSemaphore"
"""``aiotrace.primitive.kind`` of ``asyncio.BoundedSemaphore``."""
KIND_EVENT: Final = "Event"
"""``aiotrace.primitive.kind`` of ``asyncio.Event``."""
KIND_CONDITION: Final = "Condition"
"""``aiotrace.primitive.kind`` of ``asyncio.Condition``."""
KIND_BARRIER: Final = "Barrier"
"""``aiotrace.primitive.kind`` of ``asyncio.Barrier``."""
KIND_QUEUE: Final = "Queue"
"""``aiotrace.primitive.kind`` of ``asyncio.Queue``."""
KIND_PRIORITY_QUEUE: Final = "PriorityQueue"
"""``aiotrace.primitive.kind`` of ``asyncio.PriorityQueue``."""
KIND_LIFO_QUEUE: Final = "LifoQueue"
"""``aiotrace.primitive.kind`` of ``asyncio.LifoQueue``."""
KIND_FUTURE: Final = "Future"
"""``aiotrace.primitive.kind`` of a traced future."""

WAIT_SPAN_OF: Final = {
    (KIND_LOCK, "wait"): SPAN_LOCK_ACQUIRE,
    (KIND_SEMAPHORE, "wait"): SPAN_SEMAPHORE_ACQUIRE,
    (KIND_BOUNDED_SEMAPHORE, "wait"): SPAN_BOUNDED_SEMAPHORE_ACQUIRE,
    (KIND_EVENT, "wait"): SPAN_EVENT_WAIT,
    (KIND_CONDITION, "wait"): SPAN_CONDITION_WAIT,
    (KIND_BARRIER, "wait"): SPAN_BARRIER_WAIT,
    (KIND_QUEUE, "get"): SPAN_QUEUE_GET,
    (KIND_QUEUE, "put"): SPAN_QUEUE_PUT,
    (KIND_QUEUE, "join"): SPAN_QUEUE_JOIN,
    (KIND_PRIORITY_QUEUE, "get"): SPAN_PRIORITY_QUEUE_GET,
    (KIND_PRIORITY_QUEUE, "put"): SPAN_PRIORITY_QUEUE_PUT,
    (KIND_PRIORITY_QUEUE, "join"): SPAN_PRIORITY_QUEUE_JOIN,
    (KIND_LIFO_QUEUE, "get"): SPAN_LIFO_QUEUE_GET,
    (KIND_LIFO_QUEUE, "put"): SPAN_LIFO_QUEUE_PUT,
    (KIND_LIFO_QUEUE, "join"): SPAN_LIFO_QUEUE_JOIN,
}
"""(primitive kind, what the waiter does: wait, get, put, join) -> its wait span's name."""
HOLD_SPAN_OF: Final = {
    KIND_LOCK: SPAN_LOCK_HOLD,
    KIND_SEMAPHORE: SPAN_SEMAPHORE_HOLD,
    KIND_BOUNDED_SEMAPHORE: SPAN_BOUNDED_SEMAPHORE_HOLD,
}
"""Primitive kind -> its hold span's name."""

UNKNOWN_SITE: Final = "<created before aiotrace.instrument()>"
"""Site of a primitive that existed before instrumentation began."""
