"""An OTLP/HTTP receiver that counts spans, in a process of its own.

``python -m benchmarks.receiver``

It prints ``PORT <n>`` once listening. ``POST /v1/traces`` takes protobuf
export requests (parsed with the official ``opentelemetry-proto`` classes,
so a malformed payload would fail here); ``GET /count`` answers with the
number of spans received so far; it exits when its stdin closes (the
benchmark that started it is gone). Being a separate process, it competes with
the traced program for a core, not for its GIL.
"""

from __future__ import annotations

import gzip
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_count = 0
_lock = threading.Lock()
_OK = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # http.server's name
        global _count
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
        with _lock:
            _count += spans
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(_OK)))
        self.end_headers()
        self.wfile.write(_OK)

    def do_GET(self) -> None:  # http.server's name
        payload = str(_count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the benchmark closes our stdin, or dies
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
