"""The vLLM offline backend: its pure parts on CPU (request -> chat input, sampling parameters, `RequestOutput` ->
result, error isolation, batching and retries against a stand-in engine), and a real run on a GPU.

The stand-in engine (`FakeLLM`) has the shape of `vllm.LLM.chat` and returns objects shaped like vLLM's
`RequestOutput`/`CompletionOutput`; like vLLM, it rejects a whole call with a ValueError when one prompt is too long.
The GPU test builds the real engine (`tiny-random` unless `YUME_VLLM_TEST_MODEL` names another model) and is
skipped without CUDA or without vLLM.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from captioning.backends import vllm_backend as vb
from captioning.backends.base import CaptionRequest
from captioning.backends.inprocess import Attempt
from captioning.backends.vllm_backend import (
    VLLMBackend,
    chat_input,
    error_from_exception,
    generation_from_output,
    sampling_kwargs,
)
from yume_core.errors import RowError

pytestmark = pytest.mark.timeout(120)


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def request(key: str, frames: int = 2, *, urls=None, text: str = "What happens?", **kw) -> CaptionRequest:
    urls = urls if urls is not None else [url(jpeg(i)) for i in range(frames)]
    content = []
    for i, u in enumerate(urls, 1):
        content += [{"type": "text", "text": f"Frame{i}: <image>"}, {"type": "image_url", "image_url": {"url": u}}]
    content.append({"type": "text", "text": text})
    return CaptionRequest(key, [{"role": "user", "content": content}], **{"max_tokens": 32, **kw})


@dataclass
class FakeSamplingParams:  # the fields the backend sets, as keyword arguments like vllm.SamplingParams
    n: int
    max_tokens: int
    temperature: float
    seed: int
    repetition_penalty: float = 1.0


class FakeLLM:
    """`chat(conversations, sampling_params, use_tqdm)` -> RequestOutput-shaped objects; a conversation whose text
    contains TOO_LONG makes the whole call fail with vLLM's message, as vLLM's input validation does."""

    TOO_LONG = "<<too long>>"

    def __init__(self):
        self.calls: list[tuple[list, list]] = []
        self.llm_engine = SimpleNamespace(
            model_config=SimpleNamespace(get_diff_sampling_param=lambda: {"repetition_penalty": 1.05, "bogus": 1})
        )

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        assert use_tqdm is False
        self.calls.append((messages, sampling_params))
        for conv in messages:
            if self.TOO_LONG in str(conv):
                raise ValueError("The decoder prompt (length 9000) is longer than the maximum model length of 5120.")
        outputs = []
        for conv, params in zip(messages, sampling_params):
            n_images = sum(p.get("type") == "image_url" for m in conv for p in m["content"] if isinstance(p, dict))
            words = ["word"] * min(params.max_tokens, 5 + params.seed % 3)
            finish = "length" if len(words) == params.max_tokens else "stop"
            outputs.append(SimpleNamespace(
                prompt_token_ids=list(range(10 + 258 * n_images)),
                outputs=[SimpleNamespace(text=" " + " ".join(words) + " ", token_ids=list(range(len(words) + 1)),
                                         finish_reason=finish)],
            ))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setattr(vb, "import_vllm", lambda: SimpleNamespace(SamplingParams=FakeSamplingParams))
    llm = FakeLLM()
    return llm, VLLMBackend("OpenGVLab/InternVL3-78B", tensor_parallel_size=4, llm=llm, batch_size=2, seed=11)


# --- pure parts ------------------------------------------------------------------------------------------------


def test_chat_input_is_the_openai_messages_checked_on_cpu():
    req = request("a", 3)
    assert chat_input(req, image_limit=8) is req.messages  # vLLM takes the OpenAI format as is
    with pytest.raises(RowError) as err:
        chat_input(request("b", urls=[url(jpeg(1)), url(jpeg(2)[:100])]))
    assert err.value.reason == "caption_bad_input" and "image 1" in err.value.message
    with pytest.raises(RowError, match="3 images; the engine takes at most 2"):
        chat_input(request("c", 3), image_limit=2)


def test_sampling_kwargs_start_from_model_defaults():
    attempt = Attempt(0, request("a", max_tokens=77, temperature=0.0, seed=3), 0, 0.0, 3)
    kwargs = sampling_kwargs(attempt, {"repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "bogus": 1})
    assert kwargs == {"repetition_penalty": 1.05, "temperature": 0.0, "top_p": 0.8, "n": 1, "max_tokens": 77,
                      "seed": 3}
    retry = Attempt(0, attempt.request, 2, 0.6, 5)
    assert sampling_kwargs(retry)["temperature"] == 0.6 and sampling_kwargs(retry)["seed"] == 5


def test_request_output_mapping():
    def output(text, finish, n_prompt=300, n_out=4):
        completion = SimpleNamespace(text=text, token_ids=list(range(n_out)), finish_reason=finish)
        return SimpleNamespace(prompt_token_ids=list(range(n_prompt)), outputs=[completion])

    g = generation_from_output(output("  A man crosses.\n", "stop"))
    assert (g.text, g.finish_reason, g.prompt_tokens, g.output_tokens) == ("A man crosses.", "stop", 300, 4)
    assert generation_from_output(output("A man", "length")).finish_reason == "length"
    aborted = generation_from_output(output("", "abort"))
    assert isinstance(aborted, RowError) and aborted.reason == "caption_engine_error"
    assert isinstance(generation_from_output(SimpleNamespace(outputs=[])), RowError)


def test_error_classification():
    too_long = error_from_exception(ValueError("The decoder prompt (length 9000) is longer than the maximum model "
                                               "length of 5120. Make sure that `max_model_len` is no smaller ..."))
    assert too_long.reason == "caption_prompt_too_long"
    assert error_from_exception(ValueError("At most 8 image(s) may be provided")).reason == "caption_bad_input"


def test_engine_settings_match_the_serving_helper(fake_vllm):
    _, backend = fake_vllm
    kw = backend.engine_kwargs
    assert kw["model"] == "OpenGVLab/InternVL3-78B" and kw["tensor_parallel_size"] == 4
    assert kw["trust_remote_code"] is True
    assert kw["limit_mm_per_prompt"] == {"image": 8, "video": 0}
    assert kw["max_model_len"] >= 8 * 256 + 1024 and kw["mm_processor_kwargs"] == {"max_dynamic_patch": 1}
    assert kw["seed"] == 11 and 0 < kw["gpu_memory_utilization"] < 1


def test_missing_vllm_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(ImportError, match=r"yume-data\[gpu\].*CUDA"):
        VLLMBackend("OpenGVLab/InternVL3-78B", tensor_parallel_size=4)


# --- the backend against a stand-in engine ---------------------------------------------------------------------


def test_batches_order_tokens_and_sampling(fake_vllm):
    llm, backend = fake_vllm
    reqs = [request(f"k{i}", 1 + i) for i in range(5)]
    results = backend.caption(reqs)
    assert [r.key for r in results] == [f"k{i}" for i in range(5)]
    assert [len(call[0]) for call in llm.calls] == [2, 2, 1]  # batch_size 2
    assert all(r.ok and r.text == " ".join(["word"] * 7) for r in results)  # seed 11 -> 5 + 11 % 3 words
    assert [r.prompt_tokens for r in results] == [10 + 258 * (1 + i) for i in range(5)]
    assert all(r.output_tokens == 8 and r.finish_reason == "stop" and r.attempts == 1 for r in results)
    params = llm.calls[0][1][0]
    assert (params.max_tokens, params.temperature, params.seed, params.repetition_penalty) == (32, 0.0, 11, 1.05)
    assert backend.stats()["requests"] == 5


def test_request_seed_and_length_finish(fake_vllm):
    llm, backend = fake_vllm
    (r,) = backend.caption([request("a", max_tokens=6, seed=1)])
    assert llm.calls[-1][1][0].seed == 1 and r.finish_reason == "length" and r.output_tokens == 7


def test_bad_inputs_fail_alone_and_the_batch_goes_on(fake_vllm):
    llm, backend = fake_vllm
    backend.batch_size = 8
    reqs = [
        request("ok0"),
        request("corrupt", urls=[url(b"\xff\xd8\xff not a jpeg")]),
        request("long", text=FakeLLM.TOO_LONG),
        request("ok1"),
        request("many", 9),
        request("ok2"),
    ]
    results = backend.caption(reqs)
    assert [r.key for r in results] == [r.key for r in reqs]
    reasons = {r.key: (r.error.reason if r.error else None) for r in results}
    assert reasons == {"ok0": None, "corrupt": "caption_bad_input", "long": "caption_prompt_too_long", "ok1": None,
                       "many": "caption_bad_input", "ok2": None}
    # the corrupt and over-limit requests never reached the engine; the too-long one was isolated by halving
    assert all("not a jpeg" not in str(call[0]) for call in llm.calls)
    assert max(len(call[0]) for call in llm.calls) == 4
    assert sum(1 for call in llm.calls if len(call[0]) == 1 and FakeLLM.TOO_LONG in str(call[0])) == 1


def test_answer_retries_change_sampling_and_are_bounded(fake_vllm):
    llm, backend = fake_vllm
    asked = []

    def reject_twice(result):
        asked.append(result.attempts)
        return "repetitive" if len(asked) <= 2 else None

    (r,) = backend.caption([request("a")], validate=reject_twice)
    assert r.ok and r.attempts == 3 and asked == [1, 2, 3]
    sampling = [(c[1][0].temperature, c[1][0].seed) for c in llm.calls]
    assert sampling == [(0.0, 11), (0.3, 12), (0.6, 13)]
    assert r.output_tokens == sum(len(range(5 + seed % 3 + 1)) for _, seed in sampling)

    (failed,) = backend.caption([request("b")], validate=lambda result: "refusal")
    assert failed.attempts == 3 and failed.error.reason == "refusal" and failed.text
    assert backend.stats()["retries"] == {"repetitive": 2, "refusal": 2}


def test_engine_failures_propagate(fake_vllm, monkeypatch):
    llm, backend = fake_vllm

    def dead(*args, **kwargs):
        raise RuntimeError("EngineDeadError: the engine core died")

    monkeypatch.setattr(llm, "chat", dead)
    with pytest.raises(RuntimeError, match="engine core died"):
        backend.caption([request("a")])


def test_closed_backend_refuses_work(fake_vllm):
    _, backend = fake_vllm
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.caption([request("a")])


# --- on a GPU --------------------------------------------------------------------------------------------------


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_vllm_offline_engine_on_gpu(tmp_path_factory):
    pytest.importorskip("vllm")
    model = os.environ.get("YUME_VLLM_TEST_MODEL", "tiny-random")
    backend = VLLMBackend(model, tensor_parallel_size=1, gpu_memory_utilization=0.3, batch_size=4,
                          max_model_len=4096, max_num_seqs=8)
    try:
        reqs = [request("a", 2), request("b", 5), request("c", 8),
                request("bad", urls=[url(jpeg(1)[:120])])]
        first = backend.caption(reqs)
        assert [r.key for r in first] == ["a", "b", "c", "bad"]
        for r in first[:3]:
            assert r.ok and r.text and r.prompt_tokens > 0 and 0 < r.output_tokens <= 32, r
            assert r.finish_reason in ("stop", "length")
        assert first[1].prompt_tokens > first[0].prompt_tokens
        assert first[3].error is not None and first[3].error.reason == "caption_bad_input"
        again = backend.caption(reqs[:3])
        assert [r.text for r in again] == [r.text for r in first[:3]]  # greedy: deterministic
        (short,) = backend.caption([request("s", 2, max_tokens=2)])
        assert short.finish_reason == "length" and short.output_tokens == 2
    finally:
        backend.close()
