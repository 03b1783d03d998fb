"""A real OpenAI-compatible chat-completions server on loopback with scriptable faults, for tests and benchmarks.

It speaks HTTP/1.1 with keep-alive like `vllm serve`: `POST /v1/chat/completions` and `GET /v1/models`. A request is
checked the way a server would (the model must be the one served, else 404 with vLLM's message; messages must hold
at least one `image_url` part with a data URL and `max_tokens` must be a positive integer, else 400) before any
scripted behaviour applies. Several instances are several replicas.

What a valid request gets is scripted per request key (the client's `X-Caption-Key` header) and per attempt (how
many requests with that key this server has seen, from 1): a `plan` maps key -> replies consumed in order, or is a
function (key, attempt) -> reply; anything unscripted gets `ok()`, whose text names the key so that a mixed-up
result is caught. Replies: `ok(text)`, `status(code, retry_after)`, `sleep(seconds)` (answers after that long: past a
client's timeout), `malformed()` (200 with a broken JSON body), `drop()` (closes the connection without a
response), `refusal()`, `empty()`, `length()` (finish_reason "length"). `latency` delays every reply.

Every request is recorded (`received`: key, attempt here and the client's attempt number, reply, status, sampling,
timing, without the image payloads) for "never asked twice" checks, with the peak number handled at once
(`max_in_flight`). As a context manager it starts and stops cleanly: stopping wakes sleeping handlers and closes
open connections.

`python -m captioning.backends.fake_server --latency 0.2` runs one in its own process (for benchmarks, so that its
work does not share the client's interpreter lock): it prints its URL as a JSON line, serves until stdin closes, then
prints its counters and CPU time as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from captioning.backends.base import ATTEMPT_HEADER, KEY_HEADER

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
ANSWER_KINDS = ("ok", "sleep", "refusal", "empty", "length")  # replies that are chat completions


@dataclass(frozen=True)
class Reply:
    kind: str
    text: str | None = None  # None: "caption of <key>"
    finish_reason: str = "stop"
    status: int = 200
    retry_after: str | None = None
    seconds: float = 0.0


def ok(text: str | None = None) -> Reply:
    return Reply("ok", text)


def status(code: int, retry_after: float | str | None = None) -> Reply:
    """An error status; `retry_after` is sent as the `Retry-After` header (seconds or an HTTP-date)."""
    return Reply("status", status=code, retry_after=None if retry_after is None else str(retry_after))


def sleep(seconds: float, text: str | None = None) -> Reply:
    return Reply("sleep", text, seconds=seconds)


def malformed() -> Reply:
    return Reply("malformed")


def drop() -> Reply:
    return Reply("drop")


def refusal() -> Reply:
    return Reply("refusal", REFUSAL_TEXT)


def empty() -> Reply:
    return Reply("empty", "")


def length(text: str | None = None) -> Reply:
    return Reply("length", text, finish_reason="length")


Plan = Mapping[str, Sequence[Reply]] | Callable[[str | None, int], Reply | None]


@dataclass(frozen=True)
class Received:
    key: str | None
    attempt: int  # how many requests with this key this server has seen, this one included
    client_attempt: int | None  # the client's attempt number (`X-Caption-Attempt`), if it sent one
    reply: str  # the Reply kind, or "rejected" for a request that failed the server's own checks
    status: int | None  # HTTP status sent; None when the connection was dropped
    seed: int | None
    temperature: float | None
    images: int
    started: float  # time.perf_counter() when the request headers were read and when the answer was written
    finished: float


def answer_text(key: str | None) -> str:
    return f"caption of {key}"


def _check(body: bytes, model: str) -> tuple[int, str, dict]:
    """(status, problem, request summary) of a chat-completions body; status 200 when it is acceptable."""
    try:
        req = json.loads(body)
    except ValueError:
        return 400, "request body is not JSON", {}
    if not isinstance(req, dict):
        return 400, "request body is not a JSON object", {}
    if req.get("model") != model:
        return 404, f"The model `{req.get('model')}` does not exist.", {}
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "messages must be a non-empty list", {}
    images = text_chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            return 400, "each message needs a role of system, user or assistant", {}
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            return 400, "message content must be a string or a list of parts", {}
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                text_chars += len(part["text"])
            elif kind == "image_url" and str((part.get("image_url") or {}).get("url", "")).startswith("data:image/"):
                images += 1
            else:
                return 400, f"unsupported message part: {str(part)[:80]}", {}
    if images == 0:
        return 400, "no image_url part with a data:image/ URL in the messages", {}
    max_tokens = req.get("max_tokens", req.get("max_completion_tokens"))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return 400, "max_tokens must be a positive integer", {}
    summary = {
        "images": images,
        "prompt_tokens": 256 * images + text_chars // 4,  # InternVL: 256 tokens per 448 px tile
        "seed": req.get("seed"),
        "temperature": req.get("temperature"),
    }
    return 200, "", summary


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of connections must not overflow the listen backlog (SYN retries cost 1 s)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up (timeouts, drops) are expected here
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    disable_nagle_algorithm = True  # headers and body are separate writes: Nagle + delayed ACK would add 40 ms

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def setup(self):
        super().setup()
        self.server.fake._opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._closed(self.connection)

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.fake.model, "object": "model", "created": 0, "owned_by": "fake"}
            self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.send_json(404, {"detail": "Not Found"})

    def do_POST(self):
        arrived = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self.send_json(404, {"detail": "Not Found"})
            return
        key, attempt = self.headers.get(KEY_HEADER), self.headers.get(ATTEMPT_HEADER)
        key = None if key is None else urllib.parse.unquote(key)
        self.server.fake._serve(self, key, int(attempt) if attempt else None, body, arrived)

    def send_json(self, code: int, payload: dict | bytes, headers: Mapping[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _error(code: int, message: str) -> dict:
    return {"error": {"message": message, "type": "error", "param": None, "code": code}}


class FakeServer:
    """One replica; see the module docstring. `url` is its OpenAI base URL once started."""

    def __init__(self, model: str = "fake-vlm", *, latency: float = 0.0, plan: Plan | None = None, port: int = 0):
        self.model = model
        self.latency = latency
        self.plan = plan
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._received: list[Received] = []
        self._attempts: Counter = Counter()
        self._in_flight = 0
        self.max_in_flight = 0
        self._connections: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self.url: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def received(self) -> list[Received]:
        """Every request so far, in order of arrival (a request is recorded once answered, dropped or abandoned)."""
        with self._lock:
            return sorted(self._received, key=lambda r: r.started)

    def requests_for(self, key: str) -> list[Received]:
        return [r for r in self.received if r.key == key]

    def start(self) -> FakeServer:
        self._stopping.clear()
        self._server = _HTTPServer(("127.0.0.1", self._port), _Handler)
        self._server.fake = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/v1"  # the OpenAI base URL; kept after stop() for checks
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-openai-server", daemon=True
        )  # polls for shutdown every 50 ms (the stdlib default of 0.5 s would make every stop slow)
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers in latency or sleep()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # wakes handlers waiting for the next request on a kept-alive connection
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while self._connections and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _reply_for(self, key: str | None, attempt: int) -> Reply:
        if callable(self.plan):
            return self.plan(key, attempt) or ok()
        replies = (self.plan or {}).get(key, ()) if key is not None else ()
        return replies[attempt - 1] if attempt <= len(replies) else ok()

    def _serve(self, handler: _Handler, key: str | None, client_attempt: int | None, body: bytes, started: float):
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._attempts[key] += 1
            attempt = self._attempts[key]
        code, problem, req = _check(body, self.model)
        reply = self._reply_for(key, attempt) if code == 200 else Reply("rejected", status=code)
        sent: int | None = reply.status
        try:
            if code != 200:
                handler.send_json(code, _error(code, problem))
                return
            self._stopping.wait(self.latency + reply.seconds)
            if reply.kind == "drop":
                sent = None
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
            elif reply.kind == "malformed":
                handler.send_json(200, b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{')
            elif reply.kind == "status":
                headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else None
                handler.send_json(reply.status, _error(reply.status, f"scripted HTTP {reply.status}"), headers)
            else:
                handler.send_json(200, self._completion(key, reply, req["prompt_tokens"]))
        finally:
            with self._lock:
                self._in_flight -= 1
                self._received.append(
                    Received(
                        key, attempt, client_attempt, reply.kind, sent, req.get("seed"), req.get("temperature"),
                        req.get("images", 0), started, time.perf_counter(),
                    )  # fmt: skip
                )

    def _completion(self, key: str | None, reply: Reply, prompt_tokens: int) -> dict:
        text = answer_text(key) if reply.text is None else reply.text
        output_tokens = len(text.split())
        return {
            "id": f"chatcmpl-{key}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": prompt_tokens + output_tokens,
            },
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fake-vlm")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    with FakeServer(args.model, latency=args.latency, port=args.port) as server:
        print(json.dumps({"url": server.url}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin
        received = server.received
    waits = sorted(r.finished - r.started for r in received)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "requests": len(received),
                "max_in_flight": server.max_in_flight,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "handling_p50_s": waits[len(waits) // 2] if waits else None,
                "handling_p99_s": waits[int(len(waits) * 0.99)] if waits else None,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
