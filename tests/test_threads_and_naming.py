"""Event loops in two threads at once; naming primitives; options validation."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace._sites import async_with_around, short_path
from aiotrace.testing import Captured, capture_spans
from tests.cli_support import python
from tests.conftest import line_of, snapshot


def test_two_loops_in_two_threads(traced: Captured) -> None:
    """Contention in two threads at once gives separate, correct spans per loop."""
    barrier = threading.Barrier(2)
    results: dict[str, list[str]] = {}

    def run(tag: str) -> None:
        async def main() -> None:
            lock = aiotrace.name(asyncio.Lock(), f"lock-{tag}")
            order: list[str] = []

            async def worker(i: int) -> None:
                async with lock:
                    order.append(f"{tag}{i}")
                    await asyncio.sleep(0.003)

            barrier.wait()
            await asyncio.gather(
                *(asyncio.create_task(worker(i), name=f"{tag}{i}") for i in range(3))
            )
            results[tag] = order

        asyncio.run(main())

    threads = [threading.Thread(target=run, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    spans = traced.primitive_spans
    by_id = {s.span_id: s for s in spans}
    for tag in "ab":
        mine = [s for s in spans if s[semconv.ATTR_PRIMITIVE_NAME] == f"lock-{tag}"]
        assert sorted(s[semconv.ATTR_TASK_NAME] for s in mine if s.name.endswith("hold")) == [
            f"{tag}0",
            f"{tag}1",
            f"{tag}2",
        ]
        waits = [s for s in mine if s.name == semconv.SPAN_LOCK_ACQUIRE]
        assert len(waits) == 2
        for wait in waits:
            assert wait[semconv.ATTR_TASK_NAME].startswith(tag)
            for span_id, _ in wait.links:
                assert by_id[span_id][semconv.ATTR_PRIMITIVE_NAME] == f"lock-{tag}"


def test_a_site_knows_the_one_thread_that_made_its_primitives(traced: Captured) -> None:
    """The pytest plugin leaves out of a test's waits a site that only another thread
    made primitives at (a session's server thread): 0 says several threads did."""

    def make() -> asyncio.Event:
        return asyncio.Event()

    def on_a_thread(made: list[Any]) -> None:
        made.append(asyncio.Lock())
        made.append(make())

    made: list[Any] = []
    thread = threading.Thread(target=on_a_thread, args=(made,))
    thread.start()
    thread.join()
    lock, event = made
    assert lock._aiotrace_stats.thread == thread.ident
    assert event._aiotrace_stats.thread == thread.ident
    make()  # this thread makes one there too
    assert event._aiotrace_stats.thread == 0


LIBRARY_IN_A_GREENLET = """
import asyncio

def make():
    return asyncio.Event()
"""


def test_a_primitive_a_library_makes_in_a_greenlet_is_the_line_that_switched_to_it(
    traced: Captured,
) -> None:
    """SQLAlchemy runs its synchronous code in a greenlet that the task's await
    switched to: what the library makes there is the program's line that switched
    (awaited), not the task's origin, below which the greenlet's stack has nothing."""
    from aiotrace.primitives._base import via_label_of

    greenlet = pytest.importorskip("greenlet")
    library: dict[str, Any] = {}
    path = "/venv/lib/python3.11/site-packages/greenlib/__init__.py"
    exec(compile(LIBRARY_IN_A_GREENLET, path, "exec"), library)

    async def main() -> asyncio.Event:
        event: asyncio.Event = greenlet.greenlet(library["make"]).switch()  # SWITCHED_HERE
        return event

    event = asyncio.run(main())
    switched = f"test_threads_and_naming.py:{line_of('# SWITCHED_HERE')}"
    assert via_label_of(event._aiotrace_stats) == switched  # type: ignore[attr-defined]


class Cache:
    def __init__(self) -> None:
        self._lock: asyncio.Lock = asyncio.Lock()  # attribute-lock


def test_default_names_use_the_variable_and_site(traced: Captured) -> None:
    """Unnamed primitives are called after the variable or attribute they were assigned to."""

    async def main() -> None:
        cache = Cache()
        async with cache._lock:
            await asyncio.sleep(0.002)
        async with asyncio.Lock():  # unnamed-lock
            await asyncio.sleep(0.002)

    asyncio.run(main())
    first, second = traced.named(semconv.SPAN_LOCK_HOLD)
    base = os.path.basename(__file__)
    assert (
        first[semconv.ATTR_PRIMITIVE_NAME] == f"self._lock ({base}:{line_of('# attribute-lock')})"
    )
    assert second[semconv.ATTR_PRIMITIVE_NAME] == f"{base}:{line_of('# unnamed-lock')}"


LIBRARY = """
import asyncio


class Pool:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        event = asyncio.Event()
        asyncio.get_running_loop().call_soon(event.set)
        await event.wait()
"""


def _fake_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fakelib.pool`` (:data:`LIBRARY`), installed as a package is: in site-packages."""
    package = tmp_path / "lib" / "python3.99" / "site-packages" / "fakelib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pool.py").write_text(LIBRARY)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "fakelib", raising=False)
    monkeypatch.delitem(sys.modules, "fakelib.pool", raising=False)


def test_a_librarys_primitive_is_named_from_its_package(
    traced: Captured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fakelib/pool.py:7``, not ``pool.py:7``: a library's file is not the user's."""
    _fake_library(tmp_path, monkeypatch)
    from fakelib.pool import Pool  # type: ignore[import-not-found]

    async def main() -> None:
        async with Pool()._lock:  # made-here
            await asyncio.sleep(0.002)

    asyncio.run(main())
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    # Every pool's lock is made at pool.py:7: this test's line says which pool.
    here = f"{short_path(__file__)}:{line_of('# made-here')}"
    assert hold[semconv.ATTR_PRIMITIVE_NAME] == f"self._lock (fakelib/pool.py:7) via {here}"
    assert hold[semconv.ATTR_PRIMITIVE_SITE] == "fakelib/pool.py:7"
    assert hold[semconv.ATTR_PRIMITIVE_VIA_SITE] == here


def test_a_librarys_local_is_named_with_the_method_that_made_it(
    traced: Captured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``event (fakelib/pool.py:10)`` says nothing of what it is for; ``event in
    Pool.take`` does (anyio's Lock on asyncio waits on ``fut in Lock.acquire``)."""
    _fake_library(tmp_path, monkeypatch)
    from fakelib.pool import Pool

    asyncio.run(Pool().take())  # take-here
    (wait,) = traced.named(semconv.SPAN_EVENT_WAIT)
    here = f"{short_path(__file__)}:{line_of('# take-here')}"
    # 3.10's code has no qualified name: looked up within a time budget, which a
    # long session may have spent (then the function's own name).
    methods = ("Pool.take", "take") if sys.version_info < (3, 11) else ("Pool.take",)
    assert wait[semconv.ATTR_PRIMITIVE_NAME] in {
        f"event in {method} (fakelib/pool.py:10) via {here}" for method in methods
    }


def test_an_anyio_event_is_named_where_anyio_event_was_called() -> None:
    """anyio's Event on asyncio wraps an ``asyncio.Event`` made in its ``__init__``, two
    factories down: every one was ``self._event (anyio/_backends/_asyncio.py:N)``. It
    is named by the line that called ``anyio.Event()``, the program's or anyio's own."""
    import anyio

    from aiotrace.primitives._base import display_name

    names: list[str] = []

    async def main() -> None:
        done = anyio.Event()  # anyio-event-made
        names.append(display_name(done._event._aiotrace_ref))  # type: ignore[attr-defined]
        send, receive = anyio.create_memory_object_stream[int]()
        async with anyio.create_task_group() as group:
            group.start_soon(receive.receive)
            await anyio.sleep(0.01)
            waiting = receive._state.waiting_receivers  # anyio's: the receiver's event
            (event,) = waiting
            names.append(display_name(event._event._aiotrace_ref))
            await send.send(1)
        send.close()
        receive.close()

    with capture_spans():
        anyio.run(main)
    made_here = f"done ({short_path(__file__)}:{line_of('# anyio-event-made')})"
    assert names[0] == made_here
    # 3.10's code has no qualified name: looked up within a time budget (see above).
    methods = ["MemoryObjectReceiveStream.receive"] + (
        ["receive"] if sys.version_info < (3, 11) else []
    )
    assert any(names[1].startswith(f"receive_event in {m} (anyio/") for m in methods), names


DEEP_LIBRARY = """
import asyncio


def make(depth):
    if depth:
        return make(depth - 1)
    return asyncio.Lock()
"""


def test_the_walk_to_the_programs_line_stops_100_library_frames_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deep recursion in a library costs a bounded walk: no via line past 100 frames."""
    from aiotrace._sites import SITES

    package = tmp_path / "site-packages"
    package.mkdir()
    (package / "deeplib.py").write_text(DEEP_LIBRARY)
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "deeplib", raising=False)
    import deeplib  # type: ignore[import-not-found]

    with aiotrace.tracing(tasks=False):
        shallow = deeplib.make(90)  # 91 frames of the library's: within reach
        deep = deeplib.make(120)
    assert SITES.resolve(shallow._aiotrace_stats.via).path == __file__
    assert deep._aiotrace_stats.via is None
    assert deep._aiotrace_stats.raw is not None  # still named after its own line


REQUEST_LIBRARY = """
import asyncio


def make():
    return asyncio.Lock()


def make_future(loop):
    return loop.create_future()
"""


class SubLock(asyncio.Lock):
    def __init__(self) -> None:
        super().__init__()  # super-line


def test_a_line_that_makes_a_primitive_per_request_names_each_as_it_named_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The program's line is walked to once, then looked up; a library's line, whose
    program line differs from call to call, and a subclass's ``super().__init__()``,
    which the walk passes, are walked every time. Futures likewise."""
    from aiotrace._sites import SITES
    from aiotrace.primitives import _base, tasks

    package = tmp_path / "site-packages"
    package.mkdir()
    (package / "requestlib.py").write_text(REQUEST_LIBRARY)
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "requestlib", raising=False)
    import requestlib  # type: ignore[import-not-found]

    walked: list[object] = []
    walk = _base.capture_creation

    def counted(frame: Any, obj: object) -> Any:
        walked.append(obj)
        return walk(frame, obj)

    monkeypatch.setattr(_base, "capture_creation", counted)
    future_walks = [0]
    future_walk = tasks.site_and_via

    def counted_future(frame: Any, via: Any) -> Any:
        future_walks[0] += 1
        return future_walk(frame, via)

    monkeypatch.setattr(tasks, "site_and_via", counted_future)

    def walked_futures(make: Any) -> tuple[list[Any], int]:
        before = future_walks[0]
        made = make()
        return made, future_walks[0] - before

    def line(made: object) -> int:
        return SITES.resolve(made._aiotrace_stats.raw).line  # type: ignore[attr-defined]

    def walks(made: list[Any]) -> int:
        return sum(any(obj is m for m in made) for obj in walked)

    with aiotrace.tracing(tasks=False):
        plain = [asyncio.Lock() for _ in range(4)]  # plain-line
        events = [asyncio.Event() for _ in range(4)]  # event-line
        subclassed = [SubLock() for _ in range(3)]  # subclass-line
        conditions = [asyncio.Condition() for _ in range(3)]  # condition-line
        first = [requestlib.make() for _ in range(2)]  # first-program-line
        second = [requestlib.make() for _ in range(2)]  # second-program-line
        loop = asyncio.new_event_loop()
        futures = walked_futures(lambda: [loop.create_future() for _ in range(3)])  # future-line
        direct = walked_futures(
            lambda: [asyncio.Future(loop=loop) for _ in range(3)]  # direct-line
        )
        first_futures = walked_futures(
            lambda: [requestlib.make_future(loop) for _ in range(2)]  # first-future-line
        )
        second_futures = walked_futures(
            lambda: [requestlib.make_future(loop) for _ in range(2)]  # second-future-line
        )
        for made, _ in (futures, direct, first_futures, second_futures):
            for future in made:
                future.cancel()
        loop.close()

    assert {line(m) for m in plain} == {line_of("# plain-line")}
    assert len({id(m._aiotrace_stats) for m in plain}) == 1
    assert {m._aiotrace_ref.raw for m in plain} == {plain[0]._aiotrace_stats.raw}
    assert {line(m) for m in events} == {line_of("# event-line")}
    assert {m._aiotrace_stats.kind for m in events} == {semconv.KIND_EVENT}
    assert {line(m) for m in subclassed} == {line_of("# subclass-line")}
    assert {line(c) for c in conditions} == {line_of("# condition-line")}
    assert {line(c._lock) for c in conditions} == {line_of("# condition-line")}
    for made, line_there in (
        (first, line_of("# first-program-line")),
        (second, line_of("# second-program-line")),
        (first_futures[0], line_of("# first-future-line")),
        (second_futures[0], line_of("# second-future-line")),
    ):
        assert {SITES.resolve(m._aiotrace_stats.via).line for m in made} == {line_there}
        assert {SITES.resolve(m._aiotrace_stats.raw).path for m in made} == {requestlib.__file__}
    assert (walks(plain), walks(events), walks(conditions)) == (1, 1, 1)
    assert (walks(subclassed), walks(first + second)) == (3, 4)
    for (made, _), line_there in (
        (futures, line_of("# future-line")),
        (direct, line_of("# direct-line")),
    ):
        assert {line(m) for m in made} == {line_there}
        assert {m._aiotrace_stats.via for m in made} == {None}
        assert {m._aiotrace_ref.raw for m in made} == {made[0]._aiotrace_stats.raw}
    assert (futures[1], direct[1], first_futures[1] + second_futures[1]) == (1, 1, 4)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/usr/lib/python3.12/asyncio/locks.py", "asyncio/locks.py"),
        ("/home/me/.pyenv/versions/3.13.0t/lib/python3.13t/threading.py", "threading.py"),
        (
            "/v/lib/python3.12/site-packages/anyio/_backends/_asyncio.py",
            "anyio/_backends/_asyncio.py",
        ),
        ("/v/lib/python3.12/site-packages/pkg/__init__.py", "pkg/__init__.py"),
        ("/usr/lib/python3/dist-packages/aiohttp/connector.py", "aiohttp/connector.py"),
        ("/a/site-packages/vendored/site-packages/x.py", "x.py"),
        ("C:\\Py\\Lib\\site-packages\\aiohttp\\connector.py", "aiohttp/connector.py"),
        ("/home/me/app/locks.py", "locks.py"),
        ("/home/me/app/pkg/__init__.py", "pkg/__init__.py"),
    ],
)
def test_labels_name_a_librarys_file_from_its_package(path: str, label: str) -> None:
    assert short_path(path) == label


@dataclasses.dataclass
class _Pool:
    size: int = 2
    note: str = dataclasses.field(init=False)  # set in __post_init__: no default made
    read: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    write: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    ready: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    spare: asyncio.Lock = dataclasses.field(default_factory=lambda: asyncio.Lock())

    def __post_init__(self) -> None:
        self.note = "made"


@dataclasses.dataclass(frozen=True, slots=True)
class _Slotted:
    guard: asyncio.Semaphore = dataclasses.field(default_factory=asyncio.Semaphore)


def test_a_dataclass_fields_default_is_named_by_its_field_and_the_line_that_made_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``lock: asyncio.Lock = field(default_factory=asyncio.Lock)`` is made in the
    ``__init__`` dataclasses generates, whose line says nothing (``<string>:3``) and
    whose source cannot be read: such a primitive is named ``Pool.read (app.py:17)``,
    by its field and by the program's line that made the instance. Two fields of one
    instance, and one field of instances made at two lines, are each their own."""
    from aiotrace.primitives import _base
    from aiotrace.primitives._base import display_name

    walks = [0]  # before the loop, then one count per turn, then after it
    walk = _base.capture_creation

    def counted(frame: Any, obj: object) -> Any:
        walks[-1] += 1
        return walk(frame, obj)

    monkeypatch.setattr(_base, "capture_creation", counted)
    here = short_path(__file__)
    with capture_spans():
        first = _Pool()  # first-pool
        second = _Pool(3)  # second-pool
        again = []
        for _ in range(3):
            walks.append(0)
            again.append(_Pool())  # pools-in-a-loop
        walks.append(0)
        slotted = _Slotted()  # slotted
        names = [
            display_name(prim._aiotrace_ref)  # type: ignore[attr-defined]  # aiotrace's own
            for prim in (
                first.read,
                first.write,
                first.ready,
                second.read,
                again[1].write,
                slotted.guard,
            )
        ]
        spare = display_name(first.spare._aiotrace_ref)  # type: ignore[attr-defined]  # aiotrace's own
        made = (first.read, first.write, second.read, again[0].read)
        stats = {id(p._aiotrace_stats) for p in made}  # type: ignore[attr-defined]  # aiotrace's own
    at_first = f"{here}:{line_of('# first-pool')}"
    at_second = f"{here}:{line_of('# second-pool')}"
    in_loop = f"{here}:{line_of('# pools-in-a-loop')}"
    at_slotted = f"{here}:{line_of('# slotted')}"
    assert names == [
        f"_Pool.read ({at_first})",
        f"_Pool.write ({at_first})",
        f"_Pool.ready ({at_first})",
        f"_Pool.read ({at_second})",
        f"_Pool.write ({in_loop})",
        f"_Slotted.guard ({at_slotted})",
    ]
    # A factory of the program's own makes it at its line, named from that line as ever.
    assert spare == f"spare ({here}:{line_of('default_factory=lambda: asyncio.Lock()')})"
    assert len(stats) == 4  # each field and each line its own totals
    # The walk to those names is made once per field and program line, as for
    # a primitive made per request at one line of the program.
    assert walks[1:] == [3, 0, 0, 1]  # the loop's turns, then the slotted one


@pytest.mark.skipif(sys.version_info < (3, 11), reason="columns: 3.11+ code positions")
def test_locks_made_in_one_unpacking_assignment_get_their_own_names(traced: Captured) -> None:
    """``users, self.orders = Lock(), Lock()``: each name, not one line twice."""

    class Shop:
        def __init__(self) -> None:
            users, self.orders = asyncio.Lock(), asyncio.Lock()  # unpacked
            self.users = users

    async def main() -> None:
        shop = Shop()
        for lock in (shop.users, shop.orders):
            async with lock:
                await asyncio.sleep(0.002)

    asyncio.run(main())
    base, line = os.path.basename(__file__), line_of("# unpacked")
    assert [s[semconv.ATTR_PRIMITIVE_NAME] for s in traced.named(semconv.SPAN_LOCK_HOLD)] == [
        f"users ({base}:{line})",
        f"self.orders ({base}:{line})",
    ]


# fmt: off
class Wrapped:
    """Assignments as people (and formatters, with longer lines) wrap them."""

    def __init__(self) -> None:
        self._failed: asyncio.Queue[asyncio.Task[None] | None] = (
            asyncio.Queue()  # wrapped-queue
        )
        self.ready = \
            asyncio.Event()  # backslash-event
        if self.ready:
            pass
        else: self.spare = asyncio.Lock()  # keyword-lock  # noqa: E701
        self.pair = (
            asyncio.Lock(), asyncio.Lock()  # tuple-locks
        )
# fmt: on


def test_primitives_made_by_statements_sharing_a_line_get_their_own_names() -> None:
    """``lock = Lock(); sem = Semaphore(2); q = Queue(3)``: all three were named
    ``lock``, the line's first target, and the report spoke of a Semaphore and a Queue
    called ``lock``. Each statement names its own; where Python keeps no columns
    (3.10), none is named rather than all wrongly."""
    from aiotrace.primitives._base import display_name

    # fmt: off
    async def main() -> list[str]:
        lock = asyncio.Lock(); sem = asyncio.Semaphore(2); q = asyncio.Queue(3)  # one-line  # noqa: E702
        return [display_name(p._aiotrace_ref) for p in (lock, sem, q)]
    # fmt: on

    with capture_spans():
        names = asyncio.run(main())
    site = f"{short_path(__file__)}:{line_of('# one-line')}"
    if sys.version_info >= (3, 11):
        assert names == [f"lock ({site})", f"sem ({site})", f"q ({site})"]
    else:
        assert names == [site, site, site]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 keeps no columns")
def test_a_lock_per_key_of_a_defaultdict_is_named_after_the_dict() -> None:
    """``async with self._locks[key]:`` over a ``defaultdict(asyncio.Lock)`` makes the
    lock in the lookup: ``self._locks[…] (app.py:12)``, a literal key as written.
    A lookup that goes on past its subscript (``events[key].set()``) is not
    named after the dict."""
    from collections import defaultdict

    from aiotrace.primitives._base import display_name

    class Cache:
        def __init__(self) -> None:
            self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def main() -> list[str]:
        cache = Cache()
        events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        key = "a"
        async with cache._locks[key]:  # per-key
            pass
        async with cache._locks["b"]:  # literal-key
            pass
        events["b"].set()  # goes-on
        made = (cache._locks[key], cache._locks["b"], events["b"])
        return [display_name(p._aiotrace_ref) for p in made]

    with capture_spans():
        names = asyncio.run(main())
    here = short_path(__file__)
    assert names == [
        f"cache._locks[…] ({here}:{line_of('# per-key')})",
        f'cache._locks["b"] ({here}:{line_of("# literal-key")})',
        f"{here}:{line_of('# goes-on')}",
    ]


def test_a_primitive_stored_in_a_dict_is_named_after_its_item() -> None:
    """``app["db_pool"] = asyncio.Semaphore(3)``, aiohttp's way to keep an
    application's state, was reported as ``app.py:48``; now it is
    ``app["db_pool"] (app.py:48)``. A key that is not a literal is ``…``: the
    line makes one per key. Not names: an item of an item, and a value that
    is more than the call that made it."""
    from aiotrace.primitives._base import display_name

    async def main() -> list[str]:
        app: dict[str, Any] = {}
        locks: dict[str, asyncio.Lock] = {}
        key = "user-1"
        app["db_pool"] = asyncio.Semaphore(3)  # literal-item
        locks[key] = asyncio.Lock()  # variable-item
        self = type("Cache", (), {})()
        self.events = {0: None}
        self.events[0] = asyncio.Event()  # attribute-item
        nested: dict[str, dict[str, asyncio.Lock]] = {"a": {}}
        nested["a"]["b"] = asyncio.Lock()  # nested-item
        app["queues"] = [asyncio.Queue()]  # inside-item
        made = (app["db_pool"], locks[key], self.events[0], nested["a"]["b"], app["queues"][0])
        return [display_name(p._aiotrace_ref) for p in made]

    with capture_spans():
        names = asyncio.run(main())
    here = short_path(__file__)
    assert names == [
        f'app["db_pool"] ({here}:{line_of("# literal-item")})',
        f"locks[…] ({here}:{line_of('# variable-item')})",
        f"self.events[0] ({here}:{line_of('# attribute-item')})",
        f"{here}:{line_of('# nested-item')}",
        f"{here}:{line_of('# inside-item')}",
    ]


def test_a_value_wrapped_onto_the_next_line_is_named_after_its_target() -> None:
    """Formatters wrap a long annotated assignment; the value still has its name.

    aiojobs's ``self._failed_tasks: asyncio.Queue[...] = (asyncio.Queue())``
    was reported as ``_scheduler.py:54``.
    """
    from aiotrace._sites import Site, variable_name

    def site(line: int, column: int) -> Site:
        return Site(__file__, line, "Wrapped.__init__", column)

    queue_column = 12
    assert variable_name(site(line_of("# wrapped-queue"), queue_column)) == "self._failed"
    assert variable_name(site(line_of("# backslash-event"), queue_column)) == "self.ready"
    # Not names: a keyword, and values that share their line.
    assert variable_name(site(line_of("# keyword-lock"), 14)) is None
    assert variable_name(site(line_of("# tuple-locks"), queue_column)) is None
    assert variable_name(site(line_of("# tuple-locks"), queue_column + 16)) is None


def test_a_wrapped_value_is_named_in_the_spans(traced: Captured) -> None:
    async def main() -> None:
        wrapped = Wrapped()
        await wrapped._failed.put(None)
        await wrapped._failed.get()
        wrapped.ready.set()
        async with asyncio.Lock():
            pass
        waiter = asyncio.create_task(wrapped._failed.get())
        await asyncio.sleep(0)
        wrapped._failed.put_nowait(None)
        await waiter

    asyncio.run(main())
    base = os.path.basename(__file__)
    (get,) = traced.named(semconv.SPAN_QUEUE_GET)
    assert get[semconv.ATTR_PRIMITIVE_NAME] == f"self._failed ({base}:{line_of('# wrapped-queue')})"


NAMING_CASES = [
    # (the line, or the lines ending with it; where the value starts; the name)
    ("    users, self.orders = Lock(), Lock()", "Lock(), L", "users"),
    ("    users, self.orders = Lock(), Lock()", "Lock()\n", "self.orders"),
    ("    (a, b) = [X(), Y()]", "Y()", "b"),
    ("    a, = X(),", "X()", "a"),
    ("    é, b = X(), Y()", "X()", "é"),  # columns count bytes
    ("    d['k'], e = X(), Y()", "X()", None),
    ("    d['k'], e = X(), Y()", "Y()", "e"),
    ("    a, b = f()", "f()", None),
    ("    *rest, last = X(), Y()", "X()", None),
    ("    a, b == X(), Y()", "X()", None),
    ("    x = (\n        asyncio.Queue()", "asyncio", "x"),
    ("    x = (\n        asyncio.Queue(\n", "asyncio", "x"),
    ("    x = (\n        asyncio.Queue())", "asyncio", "x"),
    ("    x: Queue[int] = \\\n        make()[0].queue()  # c", "make", "x"),
    ("    x = (\n        asyncio.Queue(), 1", "asyncio", None),
    ("    x = (\n        await asyncio.Queue()", "await", None),
    ("    x = (\n        asyncio.Queue().attribute", "asyncio", None),
]


@pytest.mark.parametrize(("source", "value", "name"), NAMING_CASES)
@pytest.mark.usefixtures("no_syntax_trees_from_aiotrace")
def test_names_are_read_without_parsing_into_a_syntax_tree(
    source: str, value: str, name: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names of ``a, b = X(), Y()`` and of wrapped values come from the line's tokens.

    Never from ``ast``: the name of a future is looked up in the finaliser of
    one garbage-collected unresolved, and on 3.11.0-3.11.7 an ``ast.parse``
    there breaks the one the program was running (pytest's, showing a
    failure): ``test_naming_in_a_finaliser_leaves_the_programs_parse_alone``.
    """
    from aiotrace import _sites

    monkeypatch.setattr(_sites, "_NAME_CACHE", {})
    path = tmp_path / "case.py"
    path.write_text(source + "\n", encoding="utf-8")
    line = len(source.splitlines())
    last = source.splitlines()[-1]
    column = len(last[: (last + "\n").index(value)].encode())
    assert _sites.variable_name(_sites.Site(str(path), line, "f", column)) == name


FINALISED = """
import ast, asyncio, gc, inspect
import aiotrace

SOURCE = inspect.getsource(asyncio.tasks) * 2


async def main() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(5):
        gc.disable()
        for _ in range(200):
            a, b = loop.create_future(), loop.create_future()
            a.cycle, b.cycle = a, b  # freed by the garbage collector only
        del a, b
        gc.enable()  # and now it runs, while the tree below is built
        ast.parse(SOURCE)


with aiotrace.tracing():
    asyncio.run(main())
print("parsed")
"""


def test_naming_in_a_finaliser_leaves_the_programs_parse_alone(tmp_path: Path) -> None:
    """A future garbage-collected unresolved, in the middle of the program's ``ast.parse``.

    aiotrace names the future after ``a, b = ...`` from a finaliser. On
    3.11.0-3.11.7 (CPython gh-106905) a parse there made the program's fail
    with ``SystemError: AST constructor recursion depth mismatch``: a traced
    pytest run of anyio's suite stopped with an INTERNALERROR so. On other
    Pythons this passed before too; ``test_names_are_read_without_parsing...``
    holds on every one.
    """
    program = tmp_path / "finalised.py"
    program.write_text(FINALISED, encoding="utf-8")
    run = python(program, cwd=tmp_path)
    assert (run.returncode, run.stdout, run.stderr) == (0, "parsed\n", "")


def test_explicit_name_wins_and_propagates_to_a_conditions_lock(traced: Captured) -> None:
    """aiotrace.name() renames a primitive; a Condition's own lock follows its name."""

    async def main() -> None:
        pool = aiotrace.name(asyncio.Semaphore(1), "db-pool")
        cond = aiotrace.name(asyncio.Condition(), "jobs")
        async with pool:
            await asyncio.sleep(0.002)
        async with cond:
            await asyncio.sleep(0.002)

    asyncio.run(main())
    names = {s.name: s[semconv.ATTR_PRIMITIVE_NAME] for s in traced.primitive_spans}
    assert names == {semconv.SPAN_SEMAPHORE_HOLD: "db-pool", semconv.SPAN_LOCK_HOLD: "jobs.lock"}


@pytest.mark.pristine  # flushes between holds: its own pipeline, its own thresholds
def test_a_rename_mid_run_reaches_the_spans_after_it() -> None:
    """Spans already handed to the pipeline keep the old name; later ones carry the new."""

    async def hold(*prims: asyncio.Lock | asyncio.Condition) -> None:
        for prim in prims:
            async with prim:
                await asyncio.sleep(0)

    with capture_spans(min_hold=0) as captured:
        lock = asyncio.Lock()  # mid-run-lock
        jobs = asyncio.Condition()  # mid-run-cond
        asyncio.run(hold(lock, jobs))
        aiotrace.flush()
        aiotrace.name(lock, "renamed")
        aiotrace.name(jobs, "jobs")  # its lock is named after it
        asyncio.run(hold(lock, jobs))
        aiotrace.flush()
        asyncio.run(hold(lock, jobs))
    holds = [s[semconv.ATTR_PRIMITIVE_NAME] for s in captured.named(semconv.SPAN_LOCK_HOLD)]
    lock_line = line_of("# mid-run-lock")
    cond_line = line_of("# mid-run-cond")
    assert holds == [
        f"lock (test_threads_and_naming.py:{lock_line})",
        f"jobs.lock (test_threads_and_naming.py:{cond_line})",
        "renamed",
        "jobs.lock",
        "renamed",
        "jobs.lock",
    ]


def test_names_reach_the_totals_of_operations_never_spanned() -> None:
    """The run's per-site totals (the report's source) carry given and derived names."""
    from aiotrace._session import summary_events

    with capture_spans():  # default thresholds: these short holds are only counted

        async def main() -> None:
            cond = asyncio.Condition()
            pool = aiotrace.name(asyncio.Semaphore(2), "db-pool")
            for _ in range(3):
                async with cond, pool:
                    pass

        asyncio.run(main())
        totals = {
            attrs[semconv.ATTR_PRIMITIVE_NAME]: attrs[semconv.ATTR_OPERATIONS]
            for _, attrs in summary_events()
        }
    site = line_of("cond = asyncio.Condition()")
    assert totals == {  # the Condition itself was never waited on: no line of its own
        f"cond.lock (test_threads_and_naming.py:{site})": 3,
        "db-pool": 3,
    }


def test_name_rejects_non_primitives() -> None:
    """aiotrace.name() on something else is a clear error."""
    with pytest.raises(aiotrace.ConfigurationError, match="asyncio primitive"):
        aiotrace.name(object(), "x")


def test_unknown_option_names_the_valid_ones() -> None:
    """A typo in an option is an error that lists the valid options."""
    before = aiotrace.is_instrumented()
    with pytest.raises(aiotrace.ConfigurationError, match="min_hold"):
        aiotrace.instrument(min_hodl=0.1)
    assert aiotrace.is_instrumented() == before  # nothing changed


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("min_wait", -1, "min_wait must be"),
        ("flush_interval", "soon", "flush_interval must be"),
        ("primitives", ["lock", "mutex"], "unknown primitive families"),
        ("max_buffered", 0, "max_buffered"),
    ],
)
def test_invalid_option_values(option: str, value: object, message: str) -> None:
    """Invalid option values are rejected before anything is patched."""
    before = snapshot(), aiotrace.is_instrumented()
    with pytest.raises(aiotrace.ConfigurationError, match=message):
        aiotrace.instrument(**{option: value})
    assert (snapshot(), aiotrace.is_instrumented()) == before  # nothing changed


def test_selecting_families() -> None:
    """primitives=("event",) traces events and leaves locks untouched."""
    with capture_spans(primitives=("event",), min_wait=0, min_hold=0):
        assert "__aenter__" not in vars(asyncio.Lock)  # patching adds it
        assert "wait" in vars(asyncio.Event)


def test_qualified_names_are_looked_up_within_a_budget_that_refills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python 3.10 keeps no qualified name in a code object: aiotrace looks it up
    through the garbage collector, within a time budget. The budget was for the
    process's life: a long test session on 3.10 spent it, and every later function
    was its bare name (``set_later``, not ``main.<locals>.set_later``). It refills
    by 1% of the time that passes, up to a quarter of a second."""
    import time

    from aiotrace import _sites

    now = time.perf_counter()
    monkeypatch.setattr(_sites, "_QUALNAME_BUDGET", [0.0, now])
    assert _sites._qualname_budget() < 0.001  # spent, and no time has passed
    monkeypatch.setattr(_sites, "_QUALNAME_BUDGET", [0.0, now - 10])
    assert 0.09 < _sites._qualname_budget() < 0.11  # 1% of ten seconds
    monkeypatch.setattr(_sites, "_QUALNAME_BUDGET", [0.0, now - 1000])
    assert _sites._qualname_budget() == 0.25

    def outer() -> Any:
        def inner() -> None:
            pass

        return inner

    code = outer().__code__
    monkeypatch.setattr(_sites, "_QUALNAMES", {})
    monkeypatch.setattr(_sites, "_QUALNAME_BUDGET", [-1.0, time.perf_counter()])
    spent = "inner" if sys.version_info < (3, 11) else code.co_qualname
    assert _sites.qualname(code) == spent  # 3.10: out of budget, the bare name
    monkeypatch.setattr(_sites, "_QUALNAMES", {})
    monkeypatch.setattr(_sites, "_QUALNAME_BUDGET", [-1.0, time.perf_counter() - 1000])
    assert _sites.qualname(code).endswith("outer.<locals>.inner")  # refilled since


def test_the_async_with_blocks_around_a_line_say_what_they_entered_as_written(
    tmp_path: Path,
) -> None:
    source = tmp_path / "blocks.py"
    source.write_text(
        "class Store:\n"  # 1
        "    async def save(self, lock, key):\n"  # 2
        "        async with lock:\n"  # 3
        "            async with self._locks[key] as held, asyncio.timeout(3), (\n"  # 4
        "                other\n"  # 5
        "            ):\n"  # 6
        "                await asyncio.sleep(\n"  # 7
        "                    1)\n"  # 8
        "            async with pool.acquire() as conn:\n"  # 9
        "                await flush()\n"  # 10
        "        async with done: pass\n"  # 11
        "        await after()  # async with lock:\n"  # 12
    )
    path = str(source)
    around = {line: async_with_around(path, 2, line) for line in range(3, 13)}
    assert around[3] == ()  # entering, not inside yet
    assert (
        around[7]
        == around[8]
        == (
            ("lock", 3),
            ("self._locks[key] as held, asyncio.timeout(3), ( ...", 4),
        )
    )
    assert around[10] == (("lock", 3), ("pool.acquire() as conn", 9))
    assert around[11] == around[12] == ()
    assert async_with_around(str(tmp_path / "missing.py"), 1, 5) == ()
