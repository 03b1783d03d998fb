"""The production captioning backend: OpenAI-compatible chat-completions servers (`vllm serve`), one or many replicas.

How it works, and why:
- One asyncio event loop in a background thread per backend, started on first use, holds the HTTP clients and every
  request in flight. `caption()` is a plain blocking call from any thread: a Prefect task thread, a script, or a
  notebook whose own loop is already running. Calls from several threads share the loop, so `concurrency` bounds
  what the whole process sends to the servers (the servers' capacity is what it protects), load balancing and the
  circuit breakers see all traffic, and connections stay warm between batches.
- The calling thread pulls requests from its iterable only as slots free up (at most `concurrency + prefetch` taken
  and unfinished), so a generator that decodes frames lazily keeps memory bounded, and its decoding never blocks the
  loop. Results come back to that thread, which calls `on_result` and updates the progress bar.
- One `AsyncOpenAI` per endpoint, each with its own httpx2 connection pool of `concurrency` connections (all requests
  may land on one replica when the others are down). Not one pool shared by all endpoints: a pool of C connections
  over R replicas closes and reopens connections as load shifts between them, and httpcore scans every connection
  of a pool on each request, so a pool per replica stays smaller. The SDK's own retries are off (`max_retries=0`):
  retries are ours, so that they can move to another replica, honour `Retry-After`, feed the circuit breaker and be
  counted.
- Requests go through the SDK's generic `post` with the JSON body encoded once per sampling setting (`jsonbody`,
  fast for data URLs). The typed `chat.completions.create` would walk every message part through the SDK's
  TypedDict transform (2-4 ms of CPU per 8-frame request, more than all the rest) and re-encode the ~0.5 MB body on
  every retry. Errors are still the SDK's (`APIStatusError` and friends) and the answer is its `ChatCompletion`.
- Retried (exponential backoff with full jitter, or the server's `Retry-After`, capped at `backoff_max`): 429, 408,
  5xx, timeouts (`timeout` is a deadline for the whole attempt), refused or dropped connections, and 200 answers that
  are not a chat completion (malformed JSON, no choices). Not retried: other 4xx, which would fail the same way again
  (a wrong model name (404, the message lists the models the server serves), a prompt over the context length (400),
  a bad API key (401/403)). Rejected answers (`validate`) are re-asked as the base contract says.
- Each request's key and attempt number go to the server in the `X-Caption-Key` (percent-encoded) and
  `X-Caption-Attempt` headers, so server logs can be tied to clips and retries; vLLM ignores unknown headers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import queue
import random
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, replace

import httpx2
import openai
from openai.types.chat import ChatCompletion

from captioning.backends.balancer import Balancer, Replica
from captioning.backends.base import (
    ATTEMPT_HEADER,
    KEY_HEADER,
    CaptionBackend,
    CaptionRequest,
    CaptionResult,
    Validator,
    answer_sampling,
    judge,
    rejected,
)
from captioning.backends.jsonbody import encode_json
from captioning.backends.progress import CaptionProgress
from captioning.backends.retry import parse_retry_after, retry_delay
from captioning.backends.totals import Stats
from yume_core.errors import RowError

CONNECT_TIMEOUT = 10.0  # a replica that does not even accept a connection in this time is treated as down
_END = object()


class _BadResponse(Exception):
    """The server answered 200 with something that is not a chat completion."""


@dataclass(frozen=True)
class _Failure:
    cause: str  # what stats count retries and failures by
    reason: str  # the RowError reason if this failure is final
    retryable: bool
    detail: str
    retry_after: float | None = None
    sick: bool = False  # says the replica itself is unwell: feeds its circuit breaker


def _classify(exc: BaseException, timeout: float) -> _Failure | None:
    """What a failed attempt means; None for exceptions that are not a request failure (bugs, cancellation)."""
    if isinstance(exc, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return _Failure("timeout", "caption_timeout", True, f"no answer within {timeout:g} s", sick=True)
    if isinstance(exc, openai.APIConnectionError):
        root = _root_cause(exc)
        detail = f"connection failed ({type(root).__name__}: {root})" if root is not exc else "connection failed"
        return _Failure("connection", "caption_connection_error", True, detail, sick=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = f"HTTP {status}: {exc.message.removeprefix(f'Error code: {status} - ')}"[:400]
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        if status == 429:
            return _Failure("rate_limited", "caption_rate_limited", True, detail, retry_after)
        if status == 408:
            return _Failure("timeout", "caption_timeout", True, detail, retry_after)
        if status >= 500:
            return _Failure("server_error", "caption_server_error", True, detail, retry_after, sick=True)
        if status in (401, 403):
            return _Failure("auth", "caption_auth_failed", False, detail)
        if status == 404:
            return _Failure("model_not_found", "caption_model_not_found", False, detail)
        return _Failure("bad_request", "caption_bad_request", False, detail)
    if isinstance(exc, _BadResponse):
        return _Failure("bad_response", "caption_bad_response", True, str(exc))
    return None


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (a `ConnectionRefusedError` says more than "Connection error.")."""
    for _ in range(10):
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _answer(completion: object) -> tuple[str | None, str | None, int, int]:
    """(text, finish_reason, prompt_tokens, output_tokens) of a chat completion."""
    if not isinstance(completion, ChatCompletion) or not completion.choices:
        raise _BadResponse(f"answer has no choices: {str(completion)[:200]!r}")
    choice = completion.choices[0]
    if choice.message is None:
        raise _BadResponse("answer's first choice has no message")
    text = choice.message.content if choice.message.content is not None else choice.message.refusal
    usage = completion.usage
    return text, choice.finish_reason, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0


def base_url(endpoint: str) -> str:
    """An endpoint as the SDK's base URL: `http://host:8000` and `http://host:8000/v1` both mean the latter."""
    url = endpoint.rstrip("/")
    if urllib.parse.urlsplit(url).path == "":
        url += "/v1"
    return url


def _shut_down(loop: asyncio.AbstractEventLoop, thread: threading.Thread, clients: list[openai.AsyncOpenAI]) -> None:
    async def close_all() -> None:
        await asyncio.gather(*(client.close() for client in clients))

    asyncio.run_coroutine_threadsafe(close_all(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class _Call:
    """One `caption()` call as the loop sees it: its tasks, and the queue its results go back through."""

    def __init__(self) -> None:
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.tasks: set[asyncio.Task] = set()


class OpenAIBackend(CaptionBackend):
    """Captions through OpenAI-compatible servers; see the module docstring. `breaker_failures` consecutive transport
    failures take a replica out of rotation for `breaker_cooldown` seconds. `progress`: a bar on stderr (None: only
    on a terminal). `close()` releases the loop thread and connections; a later `caption()` opens them again."""

    name = "openai"

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        model: str,
        api_key: str = "EMPTY",
        concurrency: int = 32,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_answer_retries: int = 2,
        seed: int = 0,
        breaker_failures: int = 3,
        breaker_cooldown: float = 10.0,
        progress: bool | None = None,
    ):
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("OpenAIBackend needs at least one endpoint URL")
        if concurrency < 1 or timeout <= 0 or max_retries < 0 or max_answer_retries < 0:
            raise ValueError("concurrency and timeout must be positive, retry counts non-negative")
        self.endpoints = [base_url(e) for e in endpoints]
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.prefetch = max(2, concurrency // 8)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_answer_retries = max_answer_retries
        self.seed = seed
        self.progress = progress
        self._balancer = Balancer(self.endpoints, breaker_failures, breaker_cooldown)
        self._stats = Stats()
        self._lock = threading.Lock()  # guards _balancer, starting and closing
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finalizer: weakref.finalize | None = None

    # ---- the caller's side -------------------------------------------------------------------------------------

    def caption(
        self,
        requests: Iterable[CaptionRequest],
        on_result: Callable[[CaptionResult], None] | None = None,
        *,
        validate: Validator | None = None,
    ) -> list[CaptionResult]:
        loop = self._start()
        progress = CaptionProgress(len(requests) if isinstance(requests, Sized) else None, self.progress)
        call = _Call()
        results: list[CaptionResult | None] = []
        window = self.concurrency + self.prefetch
        pending = 0
        source = iter(requests)
        exhausted = False
        self._stats.begin()
        try:
            while True:
                batch = []
                while not exhausted and pending + len(batch) < window:
                    request = next(source, _END)
                    if request is _END:
                        exhausted = True
                        break
                    results.append(None)
                    # Encoded here, not on the loop's thread: the loop then only moves bytes, and a request waiting
                    # for a slot is ready to go the moment one frees.
                    batch.append((len(results) - 1, request, self._body(request, 0)))
                if batch:
                    loop.call_soon_threadsafe(self._submit, call, batch, validate)
                    pending += len(batch)
                if pending == 0:
                    return results
                finished = [call.done.get()]
                while not call.done.empty():  # take every result that is ready: one thread handoff for all
                    finished.append(call.done.get())
                for index, outcome in finished:
                    pending -= 1
                    if isinstance(outcome, BaseException):
                        raise outcome
                    results[index] = outcome
                    progress.update(outcome)
                    if on_result is not None:
                        on_result(outcome)
        except BaseException:
            loop.call_soon_threadsafe(self._abandon, call)
            raise
        finally:
            progress.close()
            self._stats.end()

    def stats(self) -> dict:
        """Totals over every call so far (`CaptionTotals.summary()`): results, failures by reason, attempts, retries
        by cause (`timeout`, `connection`, `rate_limited`, `server_error`, `bad_response`, or the validator's reason),
        prompt and output tokens in all and per clip, wall time, clips/s, output tokens/s; plus `endpoints`: attempts,
        successes, failures by cause and circuit-breaker openings per replica."""
        summary = self._stats.summary()
        with self._lock:
            summary["endpoints"] = self._balancer.snapshot()
        return summary

    def close(self) -> None:
        with self._lock:
            finalizer, self._finalizer, self._loop = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"caption-{self.name}", daemon=True)
                thread.start()
                clients = asyncio.run_coroutine_threadsafe(self._open(), loop).result()
                # A backend dropped without close() (or alive at exit) still closes its connections and its thread.
                self._finalizer = weakref.finalize(self, _shut_down, loop, thread, clients)
                self._loop = loop
            return self._loop

    # ---- the loop's side ---------------------------------------------------------------------------------------

    async def _open(self) -> list[openai.AsyncOpenAI]:
        self._slots = asyncio.Semaphore(self.concurrency)
        self._models: dict[str, asyncio.Future] = {}  # replica url -> the model ids it lists (see _served_models)
        limits = httpx2.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx2.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT))
        self._clients = {
            url: openai.AsyncOpenAI(
                base_url=url,
                api_key=self.api_key,
                max_retries=0,
                timeout=timeout,
                http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout),
            )
            for url in self.endpoints
        }
        return list(self._clients.values())

    def _submit(self, call: _Call, batch: list[tuple[int, CaptionRequest, bytes]], validate: Validator | None) -> None:
        loop = asyncio.get_running_loop()
        for index, request, body in batch:
            task = loop.create_task(self._caption_one(request, body, validate))
            call.tasks.add(task)
            task.add_done_callback(functools.partial(self._done, call, index))

    @staticmethod
    def _done(call: _Call, index: int, task: asyncio.Task) -> None:
        call.tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            call.done.put((index, exc if exc is not None else task.result()))

    @staticmethod
    def _abandon(call: _Call) -> None:
        for task in list(call.tasks):
            task.cancel()

    async def _caption_one(self, request: CaptionRequest, body: bytes, validate: Validator | None) -> CaptionResult:
        async with self._slots:
            result = await self._attempts(request, body, validate)
        self._stats.add(result)
        return result

    def _body(self, request: CaptionRequest, answer_retry: int) -> bytes:
        seed = self.seed if request.seed is None else request.seed
        temperature, seed = answer_sampling(request.temperature, seed, answer_retry)
        body = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        return encode_json(body)

    async def _attempts(self, request: CaptionRequest, body: bytes, validate: Validator | None) -> CaptionResult:
        """Attempts until an accepted answer or a final failure; `body` is the request encoded for the first ask."""
        start = time.perf_counter()
        key = urllib.parse.quote(request.key, safe="")
        attempts = retries = answer_retry = prompt_tokens = output_tokens = 0
        avoid: Replica | None = None
        while True:
            with self._lock:
                replica = self._balancer.pick(avoid)
            attempts += 1
            failure = None
            headers = {KEY_HEADER: key, ATTEMPT_HEADER: str(attempts)}
            try:
                completion = await asyncio.wait_for(
                    self._clients[replica.url].post(
                        "/chat/completions", cast_to=ChatCompletion, content=body, options={"headers": headers}
                    ),
                    self.timeout,
                )
                text, finish_reason, used_prompt, used_output = _answer(completion)
            except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                failure = _classify(_BadResponse(f"unreadable answer: {exc}"), self.timeout)
            except BaseException as exc:
                failure = _classify(exc, self.timeout)
                if failure is None:
                    with self._lock:
                        self._balancer.abandoned(replica)
                    raise
            with self._lock:
                if failure is None:
                    self._balancer.succeeded(replica)
                else:
                    self._balancer.failed(replica, failure.cause, failure.sick)

            if failure is not None:
                if not failure.retryable or retries >= self.max_retries:
                    error = await self._final_error(failure, replica, attempts, time.perf_counter() - start)
                    return CaptionResult(
                        request.key, None, None, prompt_tokens, output_tokens, attempts,
                        time.perf_counter() - start, replica.url, error,
                    )  # fmt: skip
                retries += 1
                self._stats.retried(failure.cause)
                avoid = replica
                await asyncio.sleep(
                    retry_delay(retries, failure.retry_after, self.backoff_base, self.backoff_max, self._rng)
                )
                continue

            prompt_tokens += used_prompt
            output_tokens += used_output
            result = CaptionResult(
                request.key, text, finish_reason, prompt_tokens, output_tokens, attempts,
                time.perf_counter() - start, replica.url,
            )  # fmt: skip
            verdict = judge(validate, result)
            if verdict is None:
                return result
            if answer_retry >= self.max_answer_retries:
                return replace(result, error=rejected(verdict, answer_retry + 1, text))
            answer_retry += 1
            self._stats.retried(verdict.reason)
            body = self._body(request, answer_retry)
            avoid = None

    async def _final_error(self, failure: _Failure, replica: Replica, attempts: int, seconds: float) -> RowError:
        detail = failure.detail
        if failure.cause == "model_not_found":
            served = await self._served_models(replica.url)
            if served is None:
                detail += "; the server lists no models either: is the endpoint the server's /v1 base URL?"
            elif self.model in served:
                detail += f"; the server does list {self.model!r}: is the endpoint the server's /v1 base URL?"
            else:
                detail += f"; model {self.model!r} is not among those the server lists: {served}"
        if failure.retryable:
            message = f"{replica.url}: {detail}; gave up after {attempts} attempts in {seconds:.1f} s"
        else:
            message = f"{replica.url}: {detail} (not retried: it would fail the same way)"
        return RowError(failure.reason, message)

    async def _served_models(self, url: str) -> list[str] | None:
        """The model ids `url` lists, or None if it cannot say; asked once per replica, however many requests fail."""
        if url not in self._models:
            self._models[url] = asyncio.ensure_future(self._list_models(url))
        return await asyncio.shield(self._models[url])

    async def _list_models(self, url: str) -> list[str] | None:
        try:
            page = await asyncio.wait_for(self._clients[url].models.list(), self.timeout)
        except (openai.APIError, TimeoutError, asyncio.TimeoutError, ValueError):
            return None
        return [m.id for m in page.data]
