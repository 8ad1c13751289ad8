"""The collector: a helper process that builds and exports the spans of traced processes.

``aiotrace run`` and the pytest plugin start one collector. Every traced
process (the program, its child processes, xdist workers) connects to it
over a Unix socket and streams wire records (``_wire``) as length-prefixed
``marshal`` frames. The collector assembles spans, writes the trace file,
exports over OTLP and aggregates the report, on another core than the
program's. Because it outlives the program, a program that crashes or is
killed still leaves a complete, valid trace file of everything it shipped.

Control is over the collector's stdin/stdout: the parent writes the config
as one JSON line, reads ``READY <socket path>``, and at the end writes
``finish`` and reads ``DONE <report json>``. If stdin closes without
``finish`` (the parent died), the collector finishes anyway. Before that,
``signal N`` has the collector send signal N to the traced child processes
(see :meth:`CollectorHandle.signal_children`).
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Final

from aiotrace import semconv
from aiotrace._assemble import Assembler
from aiotrace._recorder import LOGGER, Stats
from aiotrace._wire import W_SITE

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from aiotrace.timeline import TimelineSink

FRAME: Final = struct.Struct("!I")
MAX_FRAME: Final = 256 * 1024 * 1024

# Producer -> collector messages (first element of the marshal'd tuple).
MSG_RECORDS: Final = "R"
MSG_STATS: Final = "S"
MSG_BYE: Final = "B"
MSG_HELLO: Final = "H"
"""The first message on every connection: which process it is (its pid and parent's)."""


# ===========================================================================
# Producer side: the pipeline's consumer in every traced process
# ===========================================================================


class Shipping:
    """Sends wire records to a collector (a pipeline :class:`~aiotrace._pipeline.Consumer`).

    ``lazy`` connects on the first message instead of at once: child
    processes use it, so that helpers which never touch asyncio
    (multiprocessing's resource tracker, a forkserver) never connect, never
    hold the collector's end open, and never complain when they outlive it.
    """

    def __init__(self, address: str, lazy: bool = False) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._broken = False
        self._closed = False
        self.sent = 0
        self.lost = 0
        if not lazy:
            self._connect()

    @property
    def connected(self) -> bool:
        """Whether this process has ever reached the collector (and not lost it)."""
        return self._sock is not None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
            # Said once per connection, so after a fork the child's new one says its own.
            hello = marshal.dumps((MSG_HELLO, {"pid": os.getpid(), "ppid": os.getppid()}))
            sock.sendall(FRAME.pack(len(hello)) + hello)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._broken = False

    def reconnect(self) -> None:
        """After a fork: the inherited socket belongs to the parent; ours comes when needed."""
        self._lock = threading.Lock()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.detach()  # do not close the parent's connection
        self._broken = False
        self.sent = self.lost = 0

    def _fail(self, exc: BaseException) -> None:
        if not self._broken:
            self._broken = True
            LOGGER.warning(
                "aiotrace: lost the connection to the collector (%s); "
                "spans recorded from now on are lost",
                exc,
            )

    def _send(self, message: tuple[Any, ...]) -> bool:
        payload = marshal.dumps(message)
        with self._lock:
            if self._broken or self._closed:
                return False
            if self._sock is None:
                try:
                    self._connect()
                except OSError as exc:
                    self._fail(exc)
                    return False
            sock = self._sock
            assert sock is not None
            try:
                sock.sendall(FRAME.pack(len(payload)) + payload)
            except OSError as exc:
                self._fail(exc)
                return False
        return True

    def consume(self, records: list[tuple[Any, ...]]) -> None:
        if not records:
            return
        operations = sum(1 for record in records if record[0] < W_SITE)  # not definitions
        if self._send((MSG_RECORDS, records)):
            self.sent += operations
        else:
            self.lost += operations

    def send_stats(self, stats: dict[str, Any]) -> None:
        """This process's counters (what the collector cannot see for itself)."""
        self._send((MSG_STATS, stats))

    def flush(self, timeout: float) -> bool:
        return not self._broken

    def shutdown(self, timeout: float) -> None:
        if self.lost:  # the collector, gone, cannot report them
            LOGGER.warning(
                "aiotrace: %d recorded operation(s) and task(s) of process %d were lost "
                "with the connection to the collector",
                self.lost,
                os.getpid(),
            )
        if self._sock is not None:
            self._send((MSG_BYE,))
        with self._lock:
            self._closed = True
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                sock.close()


# ===========================================================================
# Collector side
# ===========================================================================


def descendants(pid: int) -> list[int]:
    """The living descendants of ``pid``, read from ``/proc``; none without one (not Linux)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state, parent = fh.read().rsplit(b")", 1)[1].split()[:2]
        except (OSError, ValueError):  # gone meanwhile
            continue
        if state != b"Z":  # a zombie is dead already
            children.setdefault(int(parent), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


class _Producer:
    __slots__ = ("assembler", "buffer", "finished", "pid", "resource", "stats")

    def __init__(self, stats: Stats, resource: Resource) -> None:
        self.buffer = bytearray()
        self.assembler = Assembler(stats)
        self.stats: dict[str, Any] = {}
        self.pid = 0
        """Its process id, from its hello (0 until then)."""
        self.resource = resource
        """The run's resource, and once the process has said hello, its pid's too:
        in OpenTelemetry a process is a resource, and Jaeger shows it as one."""
        self.finished = False
        """Said goodbye: shipped everything it had. A connection that ends
        without it belonged to a process killed in the middle of its run."""


class Collector:
    """Receives, assembles, exports. One thread does it all but OTLP's network I/O."""

    def __init__(self, config: dict[str, Any]) -> None:
        from opentelemetry.sdk.resources import Resource

        from aiotrace.sinks import (
            ConsoleSink,
            OtlpForwarder,
            OwnedSink,
            otlp_exporter,
            reachable,
        )

        self.config = config
        self.stats = Stats()
        self.resource = Resource(config.get("resource") or {})
        self.notes: list[str] = []
        otlp = None
        otlp_config = config.get("otlp")
        self.otlp_down: str | None = None
        if otlp_config:
            endpoint = otlp_config.get("endpoint")
            probe = otlp_config.get("probe")
            self.otlp_down = reachable(probe) if probe else None
            if self.otlp_down is None:
                exporter = otlp_exporter(
                    endpoint, otlp_config["protocol"], otlp_config.get("timeout")
                )
                otlp = OtlpForwarder(
                    exporter, self.resource, self.stats, otlp_config.get("shown", "")
                )
        self.sink = OwnedSink(self.resource, config.get("trace_file"), otlp, self.stats)
        if config.get("console"):
            self.sink.extra.append(ConsoleSink(self.resource))
        self.timeline: TimelineSink | None = None
        if config.get("html"):
            from aiotrace.timeline import TimelineSink

            self.timeline = TimelineSink(config["html"], str(config.get("title") or "aiotrace"))
            self.sink.extra.append(self.timeline)
        self.directory = tempfile.mkdtemp(prefix="aiotrace-")
        self.address = os.path.join(self.directory, "collector.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.address)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.producers: dict[socket.socket, _Producer] = {}
        self.finished_producers: list[_Producer] = []
        self.connections = 0
        self.unfinished = 0
        """Traced processes gone without saying goodbye: killed (SIGKILL, a crash)."""
        self.orphaned = True
        """No ``finish`` from the parent (yet): it died if the control stream ends so."""
        self.run_pid = int(config.get("run_pid") or 0)
        """The process that started the collector and runs the program."""
        self.signals: list[int] = []
        """Signals the parent asked to send to the child processes, not sent yet."""

    # ------------------------------------------------------------------
    def serve(self, control: IO[str], out: IO[str]) -> None:
        """Run until told to finish (or until the parent goes away)."""
        out.write(f"READY {self.address}\n")
        out.flush()
        finish = threading.Event()
        # The watcher wakes the selector through this pair, so finishing starts
        # at once instead of at the next poll timeout.
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        self.selector.register(wake_r, selectors.EVENT_READ, False)
        threading.Thread(target=self._watch, args=(control, finish, wake_w), daemon=True).start()
        while not finish.is_set():
            self._poll(0.05)
        linger = float(self.config.get("linger", 5.0))
        deadline = time.monotonic() + linger
        while self.producers and time.monotonic() < deadline:
            self._poll(0.05)
        # A process that has said goodbye may still have records in the socket
        # (it does not wait for us to read them): read on while anything is
        # waiting, whatever the linger, so that they are never cut off.
        drain_deadline = time.monotonic() + 10.0  # against a live child that never stops
        while self.producers and self._poll(0.0) and time.monotonic() < drain_deadline:
            pass
        if self.producers:
            self.notes.append(
                f"{len(self.producers)} traced process(es) still running when the report was "
                "made: their later spans are not in it"
            )
        if self.unfinished:
            self.notes.append(
                f"{self.unfinished} traced process(es) ended without finishing their trace "
                "(killed by a signal no program can catch, or crashed): what each recorded "
                "in its last moments (at most 0.2 s) may be lost"
            )
        self.selector.unregister(wake_r)
        wake_r.close()
        wake_w.close()
        report = self.close()
        if self.orphaned:
            # Nobody is left to print the report: say where the trace is.
            path = report.get("trace_file")
            sys.stderr.write(
                "aiotrace: the traced program was killed before it could finish its trace; "
                + (
                    f"the {report['stats'].get('spans_written', 0)} spans it had shipped are "
                    f"in {path} (aiotrace report {path})"
                    if path
                    else "the spans it had shipped were exported"
                )
                + "\n"
            )
            return
        out.write("DONE " + json.dumps(report) + "\n")
        out.flush()

    def _watch(self, control: IO[str], finish: threading.Event, wake: socket.socket) -> None:
        for line in control:
            command = line.split()
            if command == ["finish"]:
                self.orphaned = False
                break
            if len(command) == 2 and command[0] == "signal" and command[1].isdigit():
                self.signals.append(int(command[1]))  # sent from the selector's thread
                with contextlib.suppress(OSError):
                    wake.send(b"!")
        finish.set()
        with contextlib.suppress(OSError):
            wake.send(b"!")

    def _signal_children(self, signum: int) -> None:
        """Send ``signum`` to each child of the run that Ctrl-C would reach.

        That is, those in the run's process group: a child that started a
        session of its own (a daemon) is left alone, as the terminal would.
        The children are the traced processes that said hello, and every
        descendant of the run found in ``/proc``: a child that has not
        imported asyncio (so is not traced yet), or is no Python at all,
        would otherwise keep the program waiting for it, and outlive it.
        """
        if not self.run_pid:  # no run to take the group of (getpgid(0) is our own)
            return
        try:
            group = os.getpgid(self.run_pid)
        except OSError:
            return
        pids = {p.pid for p in self.producers.values() if p.pid and not p.finished}
        pids.update(descendants(self.run_pid))
        pids.discard(self.run_pid)
        pids.discard(os.getpid())  # the collector: a child of the run too
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile
                if os.getpgid(pid) == group:
                    os.kill(pid, signum)

    def _poll(self, timeout: float) -> bool:
        """Handle what is ready; whether anything was."""
        ready = self.selector.select(timeout)
        for key, _ in ready:
            if key.data is False:  # the watcher's wake-up
                with contextlib.suppress(OSError):
                    key.fileobj.recv(64)  # type: ignore[union-attr]
            elif key.data is None:
                conn, _ = self.listener.accept()
                conn.setblocking(False)
                self.producers[conn] = _Producer(self.stats, self.resource)
                self.connections += 1
                self.selector.register(conn, selectors.EVENT_READ, True)
            else:
                self._read(key.fileobj)  # type: ignore[arg-type]
        while self.signals:
            self._signal_children(self.signals.pop(0))
        return bool(ready)

    def _read(self, conn: socket.socket) -> None:
        producer = self.producers[conn]
        try:
            chunk = conn.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            producer.buffer += chunk
            self._frames(producer)
            return
        self._frames(producer)
        self.selector.unregister(conn)
        conn.close()
        del self.producers[conn]
        self.finished_producers.append(producer)
        if producer.buffer:
            self.notes.append("a traced process disconnected in the middle of a message")
        elif not producer.finished:
            self.unfinished += 1

    def _frames(self, producer: _Producer) -> None:
        buffer = producer.buffer
        offset = 0
        while len(buffer) - offset >= FRAME.size:
            (size,) = FRAME.unpack_from(buffer, offset)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes")
            end = offset + FRAME.size + size
            if len(buffer) < end:
                break
            message = marshal.loads(bytes(buffer[offset + FRAME.size : end]))
            offset = end
            self._handle(producer, message)
        if offset:
            del buffer[:offset]

    def _handle(self, producer: _Producer, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == MSG_RECORDS:
            drafts = producer.assembler.process(message[1])
            if drafts:
                self.sink.export(drafts, producer.resource)
        elif kind == MSG_HELLO:
            from opentelemetry.sdk.resources import Resource

            process = message[1]
            producer.pid = int(process["pid"])
            producer.resource = self.resource.merge(
                Resource(
                    {
                        semconv.ATTR_PID: int(process["pid"]),
                        semconv.ATTR_PARENT_PID: int(process["ppid"]),
                    }
                )
            )
        elif kind == MSG_STATS:
            producer.stats = dict(message[1])
        elif kind == MSG_BYE:
            producer.finished = True

    # ------------------------------------------------------------------
    def close(self) -> dict[str, Any]:
        """Finish the file and OTLP, and return the report as JSON data."""
        for conn in list(self.producers):
            self.selector.unregister(conn)
            conn.close()
            self.finished_producers.append(self.producers.pop(conn))
        self.selector.close()
        self.listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.address)
            os.rmdir(self.directory)
        otlp = self.sink.otlp
        self.sink.close(float(self.config.get("otlp_timeout", 30.0)))
        stats = self.stats
        totals: dict[str, int] = {
            "spans_built": stats.spans_built,
            "spans_dropped": stats.spans_dropped,
            "internal_errors": stats.internal_errors,
            "below_threshold": stats.below_threshold,
            "processes": self.connections,
        }
        for producer in self.finished_producers:
            for key in (
                "spans_dropped",
                "internal_errors",
                "below_threshold",
                "operations",
                "pressure_timeouts",
                "holders_unnamed",
            ):
                totals[key] = totals.get(key, 0) + int(producer.stats.get(key, 0))
            totals["peak_rss_kb"] = max(
                totals.get("peak_rss_kb", 0), int(producer.stats.get("peak_rss_kb", 0))
            )
        from aiotrace._session import peak_rss_kb

        totals["collector_peak_rss_kb"] = peak_rss_kb()
        if self.sink.writer is not None:
            totals["spans_written"] = self.sink.writer.spans_written
        export_error = self.otlp_down
        if otlp is not None:
            totals["spans_exported"] = otlp.exported
            export_error = otlp.error
            if otlp.failed:
                totals["spans_not_exported"] = otlp.failed
        elif export_error is not None:
            totals["spans_exported"] = 0
        timeline = self.timeline
        if timeline is not None and timeline.truncated:
            self.notes.append(
                f"the HTML timeline holds the first {timeline.LIMIT} spans; "
                f"{timeline.truncated} more are only in the trace"
            )
        report = self.sink.report.build(
            stats=totals,
            html_file=timeline.path if timeline is not None and timeline.size else None,
            html_bytes=timeline.size if timeline is not None else None,
            trace_file=self.sink.writer.path if self.sink.writer is not None else None,
            otlp_endpoint=(self.config.get("otlp") or {}).get("shown"),
            jaeger_url=self.config.get("jaeger_url") if self.config.get("otlp") else None,
            export_error=export_error,
            notes=self.notes,
        )
        return report.to_json()


def main() -> int:
    """``python -m aiotrace._collector``: config on stdin's first line."""
    line = sys.stdin.readline()
    if not line:
        return 2
    collector = Collector(json.loads(line))
    try:
        collector.serve(sys.stdin, sys.stdout)
    except Exception as exc:
        sys.stderr.write(f"aiotrace collector failed: {type(exc).__name__}: {exc}\n")
        return 1
    return 0


# ===========================================================================
# Parent side: starting one and getting the report
# ===========================================================================


class CollectorError(RuntimeError):
    """The collector process could not start or did not answer."""


class CollectorHandle:
    """A running collector process."""

    def __init__(self, config: dict[str, Any], startup_timeout: float = 30.0) -> None:
        env = dict(os.environ)
        # The collector must not trace itself, nor be traced by an inherited setup.
        for key in ("AIOTRACE_COLLECTOR", "TRACEPARENT"):
            env.pop(key, None)
        self.process = subprocess.Popen(  # our own module, same interpreter
            [sys.executable, "-m", "aiotrace._collector"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal is the program's, not ours
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(config) + "\n")
        self.process.stdin.flush()
        answer = _readline(self.process.stdout, startup_timeout)
        if not answer.startswith("READY "):
            self.process.kill()
            raise CollectorError("the aiotrace collector did not start")
        self.address = answer[len("READY ") :].strip()
        self._control = threading.Lock()
        """Control lines come from more than one thread (a hang's, the main one)."""

    def _tell(self, line: str) -> None:
        process = self.process
        assert process.stdin is not None
        with self._control, contextlib.suppress(OSError, ValueError):  # gone, or closed
            process.stdin.write(line + "\n")
            process.stdin.flush()

    def signal_children(self, signum: int) -> None:
        """Have the collector send ``signum`` to the traced child processes still running.

        The collector knows them (each said hello); ``run_pid`` in its
        config is spared. Those outside the run's process group are spared
        too: what Ctrl-C in the terminal would reach, this reaches.
        """
        self._tell(f"signal {int(signum)}")

    def finish(self, timeout: float = 60.0, reap: bool = True) -> dict[str, Any] | None:
        """Tell it to finish; the report data, or ``None`` if it died or hung.

        Everything is written and exported once the report arrives; the
        process then takes a while to exit. ``reap=False`` returns without
        waiting for that (call :meth:`reap` later), for callers that time it.
        """
        process = self.process
        self._tell("finish")
        assert process.stdout is not None
        answer = _readline(process.stdout, timeout)
        with self._control, contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        if reap:
            self.reap()
        if answer.startswith("DONE "):
            data: dict[str, Any] = json.loads(answer[len("DONE ") :])
            return data
        return None

    def reap(self) -> None:
        """Wait for the finished process to exit (killing it if it will not)."""
        process = self.process
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            with contextlib.suppress(OSError):
                process.stdout.close()


def _readline(stream: IO[str], timeout: float) -> str:
    result: list[str] = []

    def read() -> None:
        with contextlib.suppress(Exception):
            result.append(stream.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


if __name__ == "__main__":
    sys.exit(main())
