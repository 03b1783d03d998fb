"""The OpenAI-compatible captioning client against real loopback servers that inject faults.

Every test talks HTTP to `FakeServer`s started and stopped by the test: faults alone and recovered, exhausted
retries, non-retryable errors, rejected answers, a seeded mixed run over two replicas, load balancing, a dead
replica, bounds on requests in flight and on requests pulled, and calls from threads and running event loops.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gc
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from captioning.backends import CaptionRequest, CaptionResult, OpenAIBackend, answer_sampling, judge, rejected
from captioning.backends import fake_server as fs
from captioning.backends.balancer import Balancer
from captioning.backends.jsonbody import encode_json
from captioning.backends.openai_client import base_url
from captioning.backends.retry import backoff_delay, parse_retry_after, retry_delay
from yume_core.errors import RowError

pytestmark = pytest.mark.timeout(60)

IMAGE = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0 not really a jpeg").decode()
MODEL = "fake-vlm"


def request(key: str, images: int = 1, **kw) -> CaptionRequest:
    parts = [{"type": "text", "text": "Describe what happens."}]
    parts += [{"type": "image_url", "image_url": {"url": IMAGE}}] * images
    return CaptionRequest(key, [{"role": "user", "content": parts}], max_tokens=64, **kw)


def backend(*servers, **kw) -> OpenAIBackend:
    urls = [s if isinstance(s, str) else s.url for s in servers]
    settings = dict(timeout=0.3, backoff_base=0.01, backoff_max=0.05, max_retries=3, progress=False)
    return OpenAIBackend(urls, MODEL, **{**settings, **kw})


def validate(result: CaptionResult) -> str | None:
    """A stand-in for captioning.validate.check_caption: the three reasons the fake server can provoke."""
    if not (result.text or "").strip():
        return "empty"
    if result.text.startswith("I'm sorry"):
        return "refusal"
    if result.finish_reason == "length":
        return "truncated"
    return None


def dead_url() -> str:
    """A loopback URL nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- single faults ---------------------------------------------------------------------------------------------

FAULTS = {
    "server_error": fs.status(500),
    "unavailable": fs.status(503),
    "rate_limited": fs.status(429),
    "timeout": fs.sleep(1.0),
    "malformed": fs.malformed(),
    "dropped": fs.drop(),
}
CAUSES = {
    "server_error": "server_error",
    "unavailable": "server_error",
    "rate_limited": "rate_limited",
    "timeout": "timeout",
    "malformed": "bad_response",
    "dropped": "connection",
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_alone_is_retried_and_recovers(fault):
    with fs.FakeServer(MODEL, plan={"k": [FAULTS[fault]]}) as server, backend(server) as b:
        [result] = b.caption([request("k")])
        stats = b.stats()
    assert result.ok and result.text == "caption of k" and result.finish_reason == "stop"
    assert result.attempts == 2 and result.endpoint == server.url
    assert [(r.reply, r.client_attempt) for r in server.requests_for("k")] == [(FAULTS[fault].kind, 1), ("ok", 2)]
    assert stats["retries"] == {CAUSES[fault]: 1}
    assert stats["ok"] == 1 and stats["attempts"] == 2


def test_retry_after_seconds_is_honoured():
    with fs.FakeServer(MODEL, plan={"k": [fs.status(429, retry_after=1)]}) as server:
        with backend(server, backoff_max=5.0) as b:
            [result] = b.caption([request("k")])
    first, second = server.requests_for("k")
    waited = second.started - first.finished
    assert result.ok and result.attempts == 2
    assert 1.0 <= waited < 1.1 + 0.4  # Retry-After plus at most 10% jitter, plus loopback slack


def test_retry_after_is_capped_by_backoff_max():
    with fs.FakeServer(MODEL, plan={"k": [fs.status(503, retry_after=100)]}) as server:
        with backend(server, backoff_max=0.2) as b:
            [result] = b.caption([request("k")])
    first, second = server.requests_for("k")
    assert result.ok and second.started - first.finished < 0.2 + 0.4


def test_retry_after_parsing():
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("") is None


def test_backoff_is_exponential_with_full_jitter_and_capped():
    rng = random.Random(0)
    for retry in range(1, 8):
        cap = min(3.0, 0.5 * 2 ** (retry - 1))
        draws = [backoff_delay(retry, 0.5, 3.0, rng) for _ in range(400)]
        assert 0.0 <= min(draws) and max(draws) <= cap
        assert min(draws) < 0.1 * cap and max(draws) > 0.9 * cap  # spread over the whole range
    assert all(2.0 <= retry_delay(1, 2.0, 0.5, 30.0, rng) <= 2.2 for _ in range(100))
    assert retry_delay(1, 100.0, 0.5, 30.0, rng) == 30.0


# ---- exhausted and non-retryable -------------------------------------------------------------------------------

EXHAUSTED = [
    (fs.status(500), "caption_server_error", "HTTP 500"),
    (fs.status(429, retry_after=0), "caption_rate_limited", "HTTP 429"),
    (fs.sleep(1.0), "caption_timeout", "no answer within 0.3 s"),
    (fs.drop(), "caption_connection_error", "connection failed"),
    (fs.malformed(), "caption_bad_response", "unreadable answer"),
]


@pytest.mark.parametrize("fault,reason,detail", EXHAUSTED, ids=[e[1] for e in EXHAUSTED])
def test_exhausted_retries_fail_with_the_specific_reason(fault, reason, detail):
    with fs.FakeServer(MODEL, plan=lambda key, attempt: fault) as server, backend(server, max_retries=2) as b:
        [result] = b.caption([request("k")])
        stats = b.stats()
    assert not result.ok and result.text is None
    assert result.error.reason == reason and result.attempts == 3
    assert server.url in result.error.message and detail in result.error.message
    assert "after 3 attempts" in result.error.message
    assert len(server.requests_for("k")) == 3
    assert stats["failed"] == {reason: 1}


CLIENT_ERRORS = [
    (fs.status(400), "caption_bad_request"),
    (fs.status(401), "caption_auth_failed"),
    (fs.status(404), "caption_model_not_found"),
]


@pytest.mark.parametrize("reply,reason", CLIENT_ERRORS)
def test_client_errors_fail_at_once(reply, reason):
    with fs.FakeServer(MODEL, plan={"k": [reply]}) as server, backend(server, timeout=10) as b:  # see the 404 test
        [result] = b.caption([request("k")])
    assert result.error.reason == reason and result.attempts == 1
    assert f"HTTP {reply.status}" in result.error.message and "not retried" in result.error.message
    assert len(server.requests_for("k")) == 1


def test_wrong_model_name_says_which_models_the_server_serves():
    with fs.FakeServer(MODEL) as server, OpenAIBackend([server.url], "OpenGVLab/InternVL3-78B", progress=False) as b:
        results = b.caption([request("a"), request("b")])
    assert {r.error.reason for r in results} == {"caption_model_not_found"}
    assert "'OpenGVLab/InternVL3-78B'" in results[0].error.message and "['fake-vlm']" in results[0].error.message
    assert all(r.attempts == 1 for r in results)


def test_a_404_from_a_server_that_serves_the_model_points_at_the_url():
    with fs.FakeServer(MODEL, plan={"k": [fs.status(404)]}) as server:
        # a timeout far above any answer time: this pins that a 404 is not retried, so a first attempt slowed past
        # the suite's 0.3 s default by a busy machine must not count as a retry
        with backend(server, timeout=10) as b, backend(server.url + "/not-the-api", timeout=10) as wrong_path:
            [scripted] = b.caption([request("k")])
            [misrouted] = wrong_path.caption([request("m")])
    assert "the server does list 'fake-vlm'" in scripted.error.message
    assert misrouted.error.reason == "caption_model_not_found"
    assert "lists no models either" in misrouted.error.message and misrouted.attempts == 1


def test_a_request_the_server_rejects_is_not_retried():
    with fs.FakeServer(MODEL) as server, backend(server) as b:
        [result] = b.caption([request("no-images", images=0)])
    assert result.error.reason == "caption_bad_request" and "image_url" in result.error.message
    assert [r.reply for r in server.received] == ["rejected"]


def test_an_endpoint_where_nothing_listens_fails_with_connection_errors():
    with backend(dead_url(), max_retries=2) as b:
        results = b.caption([request("a"), request("b")])
    assert [r.error.reason for r in results] == ["caption_connection_error"] * 2
    assert all(r.attempts == 3 and "refused" in r.error.message.lower() for r in results)


# ---- answers the validator rejects -----------------------------------------------------------------------------


def test_rejected_answers_are_asked_again_with_other_sampling_then_fail_with_the_reason():
    plan = {
        "refuses": [fs.refusal(), fs.refusal(), fs.refusal()],
        "empty-once": [fs.empty()],
        "cut-once": [fs.length("A man walks past the")],
    }
    with fs.FakeServer(MODEL, plan=plan) as server, backend(server, max_answer_retries=2, seed=5) as b:
        refuses, empty_once, cut_once = b.caption(
            [request("refuses"), request("empty-once"), request("cut-once", temperature=0.2)], validate=validate
        )
        stats = b.stats()
    assert refuses.error.reason == "refusal" and refuses.attempts == 3
    assert refuses.text == fs.REFUSAL_TEXT and "asked 3 times" in refuses.error.message
    assert fs.REFUSAL_TEXT in refuses.error.message
    assert refuses.output_tokens == 3 * len(fs.REFUSAL_TEXT.split())  # every answer was paid for
    assert [(r.seed, r.temperature) for r in server.requests_for("refuses")] == [(5, 0.0), (6, 0.3), (7, 0.6)]
    assert empty_once.ok and empty_once.text == "caption of empty-once" and empty_once.attempts == 2
    assert cut_once.ok and [r.temperature for r in server.requests_for("cut-once")] == [0.2, pytest.approx(0.5)]
    assert stats["retries"] == {"refusal": 2, "empty": 1, "truncated": 1}
    assert stats["failed"] == {"refusal": 1}


def test_a_validator_may_give_its_own_message_and_without_one_every_answer_is_accepted():
    def strict(result):
        return RowError("camera_motion", "the caption narrates the camera") if "caption" in result.text else None

    with fs.FakeServer(MODEL, plan={"r": [fs.refusal()]}) as server, backend(server, max_answer_retries=0, timeout=10) as b:
        [judged] = b.caption([request("k")], validate=strict)
        [unjudged] = b.caption([request("r")])
    assert judged.error.reason == "camera_motion" and "narrates the camera" in judged.error.message
    assert judged.attempts == 1 and judged.text == "caption of k"
    assert unjudged.ok and unjudged.text == fs.REFUSAL_TEXT


def test_answer_policy_helpers():
    assert answer_sampling(0.0, 3, 0) == (0.0, 3)
    assert answer_sampling(0.0, 3, 2) == (pytest.approx(0.6), 5)
    assert answer_sampling(0.9, 3, 1) == (1.0, 4)
    result = CaptionResult("k", "x" * 500, "stop", 1, 1, 1, 0.1, None)
    assert judge(None, result) is None
    assert judge(lambda r: None, result) is None
    assert judge(lambda r: "too_long", result).reason == "too_long"
    error = rejected(RowError("too_long", "too long"), 3, result.text)
    assert error.reason == "too_long" and "asked 3 times" in error.message and len(error.message) < 300


# ---- a mixed run -----------------------------------------------------------------------------------------------

MIXED_FAULTS = [
    fs.status(500), fs.status(503), fs.status(429, retry_after=0.02), fs.sleep(0.6), fs.malformed(), fs.drop(),
    fs.refusal(), fs.empty(), fs.length(),
]
FAILURE_REASONS = {
    "caption_server_error", "caption_rate_limited", "caption_timeout", "caption_bad_response",
    "caption_connection_error", "refusal", "empty", "truncated",
}  # fmt: skip


def mixed_plan(key: str, attempt: int) -> fs.Reply | None:
    if key.endswith("0") and int(key[1:]) % 50 == 0:
        return fs.status(500)  # a few keys that never succeed
    rng = random.Random(f"mixed:{key}:{attempt}")
    return rng.choice(MIXED_FAULTS) if rng.random() < 0.35 else None


def test_a_mixed_run_over_two_replicas_loses_nothing_and_repeats_no_success():
    keys = [f"c{i:03d}" for i in range(200)]
    delivered: list[str] = []
    a, b_ = fs.FakeServer(MODEL, latency=0.005, plan=mixed_plan), fs.FakeServer(MODEL, latency=0.005, plan=mixed_plan)
    with a, b_, backend(a, b_, concurrency=16, max_retries=3, max_answer_retries=1, breaker_cooldown=0.2) as b:
        start = time.perf_counter()
        results = b.caption((request(k) for k in keys), on_result=lambda r: delivered.append(r.key), validate=validate)
        seconds = time.perf_counter() - start
        stats = b.stats()
    assert seconds < 30
    assert [r.key for r in results] == keys and sorted(delivered) == keys  # one result each, in input order
    by_key: dict[str, list[tuple[str, fs.Received]]] = {k: [] for k in keys}  # key -> (replica, request)
    for server in (a, b_):
        for r in server.received:
            by_key[r.key].append((server.url, r))
    for result in results:
        seen = {r.client_attempt: (url, r) for url, r in by_key[result.key]}
        assert len(seen) == len(by_key[result.key])  # no attempt was sent twice
        # Never more requests than attempts, none after the last; fewer only when an attempt timed out before its
        # bytes left the client (possible on a loaded machine).
        assert 1 <= len(seen) <= result.attempts and max(seen) <= result.attempts
        if result.ok:  # the answer taken is the last attempt's: nothing was asked after a success
            url, last = seen[result.attempts]
            assert result.text == f"caption of {result.key}" and url == result.endpoint
            assert last.reply == "ok" and last.status == 200
        else:
            assert result.error.reason in FAILURE_REASONS and result.error.message
    failed = [r for r in results if not r.ok]
    assert 4 <= len(failed) < 60 and sum(r.attempts > 1 for r in results) > 40
    assert stats["requests"] == 200 and stats["ok"] + sum(stats["failed"].values()) == 200
    assert stats["attempts"] == sum(r.attempts for r in results) >= len(a.received) + len(b_.received)
    assert set(stats["retries"]) >= {"server_error", "rate_limited", "timeout", "bad_response", "connection"}
    assert min(len(a.received), len(b_.received)) > 20  # both replicas served (breakers may bench one for a while)


# ---- load balancing --------------------------------------------------------------------------------------------


def test_requests_spread_over_replicas_and_favour_the_faster_one():
    with fs.FakeServer(MODEL, latency=0.02) as a, fs.FakeServer(MODEL, latency=0.02) as b_:
        with backend(a, b_, concurrency=8) as b:
            assert all(r.ok for r in b.caption([request(f"k{i}") for i in range(200)]))
    assert 70 <= len(a.received) <= 130
    with fs.FakeServer(MODEL, latency=0.12) as slow, fs.FakeServer(MODEL, latency=0.01) as fast:
        with backend(slow, fast, concurrency=8) as b:
            assert all(r.ok for r in b.caption([request(f"k{i}") for i in range(200)]))
    assert len(fast.received) > 3 * len(slow.received)  # least outstanding, not round robin


def test_a_retry_goes_to_another_replica():
    always_500 = lambda key, attempt: fs.status(500)  # noqa: E731
    with fs.FakeServer(MODEL, plan=always_500) as sick, fs.FakeServer(MODEL) as well:
        with backend(sick, well, concurrency=1) as b:
            results = b.caption([request(f"k{i}") for i in range(6)])
    assert all(r.ok and r.endpoint == well.url for r in results)
    assert all(r.attempts <= 2 for r in results)  # a failure at the sick replica is retried at the other


def test_a_dead_replica_is_routed_around_and_used_again_once_back():
    dead = dead_url()
    port = int(dead.rsplit(":", 1)[1].split("/")[0])
    with fs.FakeServer(MODEL, latency=0.01) as live, backend(dead, live, concurrency=8, breaker_cooldown=0.3) as b:
        first = b.caption([request(f"a{i}") for i in range(100)])
        during = b.stats()["endpoints"][dead]
        with fs.FakeServer(MODEL, latency=0.01, port=port) as revived:
            time.sleep(0.35)  # past the cool-down: the next attempt there is a probe
            second = b.caption([request(f"b{i}") for i in range(100)])
    assert all(r.ok and r.endpoint == live.url for r in first)
    assert during["ok"] == 0 and during["breaker_opened"] >= 1
    assert during["attempts"] <= 12  # only until the breaker opened (a few were in flight together)
    assert all(r.ok for r in second) and len(revived.received) > 20


def test_circuit_breaker_opens_probes_one_at_a_time_and_closes_on_success():
    now = [0.0]
    lb = Balancer(["a", "b"], failures=2, cooldown=5.0, clock=lambda: now[0])
    a, b = lb.replicas
    assert [lb.pick().url for _ in range(2)] == ["a", "b"]  # ties rotate
    lb.failed(a, "connection", sick=True)
    lb.succeeded(b)
    assert lb.pick().url == "a"
    lb.failed(a, "connection", sick=True)  # second in a row: open
    assert a.breaker_opened == 1 and a.open_until == 5.0
    assert {lb.pick().url for _ in range(3)} == {"b"}  # skipped, even with more outstanding at b
    assert lb.pick(avoid=b).url == "b"  # nothing else is usable
    now[0] = 5.0
    probe = lb.pick()
    assert probe is a and lb.pick().url == "b"  # one probe at a time
    lb.failed(a, "timeout", sick=True)
    assert a.breaker_opened == 2 and a.open_until == 10.0
    now[0] = 10.0
    lb.succeeded(lb.pick())
    assert a.consecutive_failures == 0 and lb.pick(avoid=b) is a
    lb.failed(a, "rate_limited", sick=False)
    lb.failed(a, "rate_limited", sick=False)
    assert a.open_until == 10.0 and a.failures == {"connection": 2, "timeout": 1, "rate_limited": 2}


def test_every_replica_open_still_serves_the_least_loaded():
    lb = Balancer(["a", "b"], failures=1, cooldown=60.0)
    a, b = lb.replicas
    lb.failed(lb.pick(), "connection", sick=True)
    lb.failed(lb.pick(), "connection", sick=True)
    assert a.open_until > 0 and b.open_until > 0
    assert lb.pick() is a and lb.pick() is b


# ---- bounds, threads, loops ------------------------------------------------------------------------------------


def test_requests_in_flight_and_requests_pulled_are_bounded():
    pulled = finished = peak = 0

    def source():
        nonlocal pulled, peak
        for i in range(60):
            pulled += 1
            peak = max(peak, pulled - finished)
            yield request(f"k{i}")

    def done(result):
        nonlocal finished
        finished += 1

    with fs.FakeServer(MODEL, latency=0.03) as server, backend(server, concurrency=4) as b:
        results = b.caption(source(), on_result=done)
    assert len(results) == 60 and all(r.ok for r in results)
    assert server.max_in_flight == 4
    assert 4 < peak <= 4 + b.prefetch


def test_concurrent_calls_from_threads_share_one_bound_and_keep_their_own_results():
    outputs: dict[str, list[CaptionResult]] = {}
    with fs.FakeServer(MODEL, latency=0.02) as server, backend(server, concurrency=4) as b:

        def work(name):
            outputs[name] = b.caption([request(f"{name}{i}") for i in range(30)])

        threads = [threading.Thread(target=work, args=(n,)) for n in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = b.stats()
    assert server.max_in_flight <= 4
    for name in ("x", "y"):
        assert [r.text for r in outputs[name]] == [f"caption of {name}{i}" for i in range(30)]
    assert stats["requests"] == 60


def test_usable_from_inside_a_running_event_loop():
    async def notebook_cell(b):
        return b.caption([request("k")])

    with fs.FakeServer(MODEL) as server, backend(server) as b:
        [result] = asyncio.run(notebook_cell(b))
    assert result.ok


def test_results_come_back_in_input_order_and_on_result_as_they_finish():
    plan = {"slow": [fs.sleep(0.15)]}
    seen: list[str] = []
    with fs.FakeServer(MODEL, plan=plan) as server, backend(server, concurrency=4) as b:
        results = b.caption([request(k) for k in ("slow", "fast1", "fast2")], on_result=lambda r: seen.append(r.key))
    assert [r.key for r in results] == ["slow", "fast1", "fast2"]
    assert seen[-1] == "slow" and all(r.ok for r in results)


def test_an_error_in_the_callers_code_propagates_and_the_backend_stays_usable():
    def source():
        yield from (request(f"k{i}") for i in range(5))
        raise KeyError("frame decoder broke")

    def explode(result):
        raise RuntimeError("disk full")

    with fs.FakeServer(MODEL, latency=0.05) as server, backend(server, concurrency=2) as b:
        with pytest.raises(KeyError, match="frame decoder broke"):
            b.caption(source())
        with pytest.raises(RuntimeError, match="disk full"):
            b.caption([request(f"j{i}") for i in range(10)], on_result=explode)
        assert [r.text for r in b.caption([request("after")])] == ["caption of after"]


def test_close_releases_the_thread_and_a_dropped_backend_cleans_up_too():
    def loop_threads():
        return sum(t.name == "caption-openai" for t in threading.enumerate())

    before = loop_threads()
    with fs.FakeServer(MODEL) as server:
        b = backend(server)
        assert b.caption([request("a")])[0].ok and loop_threads() == before + 1
        b.close()
        b.close()
        assert loop_threads() == before
        assert b.caption([request("b")])[0].ok  # reopens
        del b
        gc.collect()
        assert loop_threads() == before


def test_progress_bar_shows_clips_and_tokens_per_second(capsys):
    with fs.FakeServer(MODEL) as server, backend(server, progress=True) as b:
        b.caption([request(f"k{i}") for i in range(5)])
    err = capsys.readouterr().err
    assert "5/5" in err and "clip/s" in err and "out tok/s" in err


def test_stats_count_tokens_per_clip_and_per_endpoint():
    with fs.FakeServer(MODEL) as server, backend(server) as b:
        results = b.caption([request("a", images=8), request("b", images=2)])
        stats = b.stats()
    assert [r.prompt_tokens for r in results] == [8 * 256 + 5, 2 * 256 + 5]  # the fake server's token model
    assert stats["prompt_tokens"] == sum(r.prompt_tokens for r in results)
    assert stats["output_tokens"] == 6 and stats["output_tokens_per_clip"] == 3
    assert stats["endpoints"] == {server.url: {"attempts": 2, "ok": 2, "failures": {}, "breaker_opened": 0}}
    assert stats["seconds"] > 0 and stats["clips_per_s"] > 0


def test_throughput_is_close_to_concurrency_over_latency():
    """A loose guard against gross regressions (requests serialised, connections not reused); the benchmark holds
    the real bar. 16 in flight against 0.1 s answers is 160 requests/s at most."""
    with fs.FakeServer(MODEL, latency=0.1) as server, backend(server, concurrency=16, timeout=5) as b:
        b.caption([request("warm-up")])
        start = time.perf_counter()
        results = b.caption([request(f"k{i}") for i in range(240)])
        rate = len(results) / (time.perf_counter() - start)
    assert all(r.ok for r in results)
    assert rate > 0.5 * 160


def test_endpoint_urls_and_arguments():
    assert base_url("http://node1:8000") == "http://node1:8000/v1"
    assert base_url("http://node1:8000/v1/") == "http://node1:8000/v1"
    assert base_url("https://gateway/vlm/v1") == "https://gateway/vlm/v1"
    assert OpenAIBackend("http://node1:8000", "m").endpoints == ["http://node1:8000/v1"]
    with pytest.raises(ValueError):
        OpenAIBackend([], "m")
    with pytest.raises(ValueError):
        OpenAIBackend(["http://x"], "m", concurrency=0)


def test_request_bodies_encode_exactly_as_json_dumps():
    rng = random.Random(3)
    data_url = "data:image/jpeg;base64," + base64.b64encode(rng.randbytes(3000)).decode()
    long_strings = [
        data_url,
        data_url[:1500] + '"' + data_url[1500:],
        data_url[:1500] + "\\" + data_url[1500:],
        data_url[:1500] + "\n" + data_url[1500:],
        data_url[:1500] + "\x1f" + data_url[1500:],
        data_url[:1500] + "\x7f" + data_url[1500:],
        data_url[:1500] + "é" + data_url[1500:],
    ]
    body = {
        "model": "OpenGVLab/InternVL3-78B",
        "messages": [
            {"role": "system", "content": 'Say "what happens".\tNo camera talk \\ please \u2014 ok'},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}} for u in long_strings]},
        ],
        "max_tokens": 160,
        "temperature": 0.3,
        "seed": None,
        "flags": (True, False, -1, 2.5e-7),
        "empty": {"list": [], "dict": {}},
    }
    assert encode_json(body) == json.dumps(body, separators=(",", ":")).encode()
    assert json.loads(encode_json(body)) == json.loads(json.dumps(body))
    for _ in range(200):  # long ASCII strings with one character from anywhere in the range
        text = data_url[:1100] + chr(rng.randrange(128)) + data_url[1100:1200]
        assert encode_json([text]) == json.dumps([text]).encode()
    with pytest.raises(TypeError):
        encode_json({1: "x"})


# ---- the fake server itself ------------------------------------------------------------------------------------


def _post(url: str, body: dict) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    req = urllib.request.Request(url + "/chat/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_fake_server_checks_requests_like_a_server_and_lists_its_model():
    image = {"type": "image_url", "image_url": {"url": IMAGE}}
    good = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": [image]}]}
    with fs.FakeServer(MODEL) as server:
        with urllib.request.urlopen(server.url + "/models", timeout=5) as response:
            assert [m["id"] for m in json.load(response)["data"]] == [MODEL]
        code, answer = _post(server.url, good)
        assert code == 200 and answer["choices"][0]["message"]["content"] == "caption of None"
        assert answer["usage"]["prompt_tokens"] == 256
        assert _post(server.url, {**good, "model": "other"})[0] == 404
        assert _post(server.url, {**good, "max_tokens": 0})[0] == 400
        assert _post(server.url, {**good, "messages": [{"role": "user", "content": "no image"}]})[0] == 400
        http_image = {"type": "image_url", "image_url": {"url": "http://example.com/a.jpg"}}
        assert _post(server.url, {**good, "messages": [{"role": "user", "content": [http_image]}]})[0] == 400
    assert [r.status for r in server.received] == [200, 404, 400, 400, 400]
