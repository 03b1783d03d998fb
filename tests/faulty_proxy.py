"""An HTTP proxy in front of the loopback S3 server that answers chosen requests with an S3 error instead of
forwarding them: what a bucket under load does (503 SlowDown) or a flaky network (a connection reset mid-request).
The client signs requests for the proxy's address; moto does not check signatures, so they are forwarded as sent."""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>faulty-proxy</RequestId></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultyProxy:
    """Requests whose `METHOD path` matches `pattern` get 503 SlowDown with probability `slow_down`, and those that
    match `reset_pattern` (default: `pattern`) have their connection reset with probability `reset` (seeded: the
    same draws on every run); the rest reach `upstream`. `faults` counts the errors served per `METHOD path`;
    `healthy()` stops injecting."""

    def __init__(self, upstream: str, pattern: str = ".", slow_down: float = 0.0, reset: float = 0.0, seed: int = 0,
                 reset_pattern: str | None = None):
        self.upstream = urlparse(upstream)
        self.pattern, self.slow_down, self.reset = re.compile(pattern), slow_down, reset
        self.reset_pattern = re.compile(reset_pattern) if reset_pattern is not None else self.pattern
        self.random = random.Random(seed)
        self.faults: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultyProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def healthy(self) -> None:
        with self.lock:
            self.slow_down = self.reset = 0.0

    def _fault(self, request: str) -> str | None:
        with self.lock:
            throttled, reset = self.pattern.search(request), self.reset_pattern.search(request)
            if not (throttled or reset):
                return None
            draw = self.random.random()
            fault = "slow_down" if throttled and draw < self.slow_down else \
                "reset" if reset and self.slow_down <= draw < self.slow_down + self.reset else None
            if fault:
                self.faults[request] += 1
            return fault

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients pool connections

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _any(self) -> None:
                body = self._body()
                fault = proxy._fault(f"{self.command} {self.path}")
                if fault == "reset":  # RST instead of an answer
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if fault == "slow_down":
                    self._answer(503, [("Content-Type", "application/xml")], SLOW_DOWN)
                    return
                up = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    up.request(self.command, self.path, body=body, headers=headers)
                    response = up.getresponse()
                    data = response.read()
                    kept = [(k, v) for k, v in response.getheaders()
                            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
                    self._answer(response.status, kept, data, head=self.command == "HEAD",
                                 length=response.getheader("Content-Length"))
                finally:
                    up.close()

            def _answer(self, status: int, headers, data: bytes, head: bool = False, length: str | None = None):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", length if head and length is not None else str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
