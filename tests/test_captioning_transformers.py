"""The transformers captioning backend on the tiny random InternVL, offline on CPU, and the model spec.

The tiny model is a real InternVL (vision tower, projector, Qwen2) with random weights, saved like an `-hf`
checkpoint and loaded through the same `from_pretrained(path)` calls as a real one. Its answers are random English
words: the tests check the shape of behaviour (one result per request in order, token counts that follow the
frames, finish reasons, determinism, failures and retries), never the wording.
"""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")

from captioning.backends.base import CaptionRequest, CaptionResult  # noqa: E402
from captioning.backends.inprocess import split_messages  # noqa: E402
from captioning.backends.model_spec import parse_model_spec, resolve_model  # noqa: E402
from captioning.backends.transformers_backend import TransformersBackend  # noqa: E402
from captioning.tiny_internvl import SPECIAL_TOKENS, TINY_WORDS, build_tiny_internvl  # noqa: E402
from yume_core.errors import RowError  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def jpeg(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def request(key: str, frames: int, *, max_tokens: int = 24, seed: int | None = None, temperature: float = 0.0,
            urls: list[str] | None = None) -> CaptionRequest:
    """The layout `captioning.prompts` builds: system message, then `FrameN: <image>` + image part per frame."""
    urls = urls if urls is not None else [data_url(jpeg(hash((key, i)) % 2**32)) for i in range(frames)]
    content: list[dict] = []
    for i, url in enumerate(urls, 1):
        content.append({"type": "text", "text": f"Frame{i}: <image>"})
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": "Describe what happens in the street, in one sentence."})
    messages = [{"role": "system", "content": "You write captions."}, {"role": "user", "content": content}]
    return CaptionRequest(key, messages, max_tokens=max_tokens, temperature=temperature, seed=seed)


@pytest.fixture(scope="module")
def backend():
    with TransformersBackend("tiny-random", batch_size=4, max_answer_retries=2) as b:
        yield b


# --- the tiny model --------------------------------------------------------------------------------------------


def test_tiny_model_is_an_hf_checkpoint_built_once_per_config(tmp_path):
    first = build_tiny_internvl(0, cache_dir=tmp_path)
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "preprocessor_config.json", "processor_config.json", "chat_template.jinja"):
        assert (first / name).is_file(), name
    config = json.loads((first / "config.json").read_text())
    assert config["architectures"] == ["InternVLForConditionalGeneration"]
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = build_tiny_internvl(0, cache_dir=tmp_path)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    other = build_tiny_internvl(1, cache_dir=tmp_path)
    assert other != first
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]  # no half-built leftovers


def test_tiny_tokenizer_decodes_to_english_words(backend):
    tok = backend.tokenizer
    ids = tok("the man walks along the street .", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "the man walks along the street."
    words = set(TINY_WORDS)
    rng = np.random.default_rng(0)
    sample = rng.integers(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(TINY_WORDS), 200).tolist()
    assert all(w in words for w in tok.decode(sample).replace(".", " ").replace(",", " ").split())
    assert tok.convert_tokens_to_ids("<IMG_CONTEXT>") == backend.net.config.image_token_id


# --- the backend -----------------------------------------------------------------------------------------------


def test_batch_of_three_requests_with_2_to_8_frames(backend):
    reqs = [request("a", 2), request("b", 5), request("c", 8)]
    seen: list[CaptionResult] = []
    results = backend.caption(reqs, on_result=seen.append)
    assert [r.key for r in results] == ["a", "b", "c"]
    assert sorted(r.key for r in seen) == ["a", "b", "c"]
    for r in results:
        assert r.ok and r.error is None and r.attempts == 1 and r.endpoint is None
        assert r.text and r.text.strip() == r.text
        assert r.finish_reason in ("stop", "length")
        assert 0 < r.output_tokens <= 24
        assert r.seconds >= 0
    # each extra frame costs <img> + 16 image tokens + </img> + its "FrameN: <image>" label in the prompt
    per_frame = [(results[1].prompt_tokens - results[0].prompt_tokens) / 3,
                 (results[2].prompt_tokens - results[1].prompt_tokens) / 3]
    assert per_frame[0] == per_frame[1] and per_frame[0] >= backend.tokens_per_tile + 2
    stats = backend.stats()
    assert stats["requests"] >= 3 and stats["output_tokens"] >= sum(r.output_tokens for r in results)


def test_greedy_and_seeded_sampling_are_deterministic(backend):
    reqs = [request("a", 2, max_tokens=16), request("b", 3, max_tokens=16)]
    assert [r.text for r in backend.caption(reqs)] == [r.text for r in backend.caption(reqs)]
    sampled = [request(k, 2, max_tokens=16, temperature=1.0, seed=7) for k in "abc"]
    first, second = backend.caption(sampled), backend.caption(sampled)
    assert [r.text for r in first] == [r.text for r in second]
    reseeded = backend.caption([request(k, 2, max_tokens=16, temperature=1.0, seed=8) for k in "abc"])
    assert [r.text for r in reseeded] != [r.text for r in first]


def test_an_answer_depends_on_its_own_request_only(backend):
    """A retry of one clip, or a rerun whose frames arrive in another order, answers as the first run did: no
    shared padding or RNG stream between requests (one seed for all here, as a batch of old-style requests had)."""
    reqs = [request(k, 1 + i % 3, max_tokens=16, temperature=t, seed=7)
            for i, (k, t) in enumerate(zip("abcdef", (0.0, 0.0, 0.0, 1.0, 1.0, 1.0)))]
    together = {r.key: r.text for r in backend.caption(reqs)}
    reordered = {r.key: r.text for r in backend.caption(reqs[::-1])}
    alone = {r.key: r.text for req in reqs for r in backend.caption([req])}
    assert together == reordered == alone
    assert len(set(together.values())) > 1


def test_small_max_tokens_finishes_with_length(backend):
    (result,) = backend.caption([request("short", 2, max_tokens=3)])
    assert result.ok and result.finish_reason == "length" and result.output_tokens == 3
    assert len(result.text.split()) <= 3


def test_bad_images_fail_their_own_request_only(backend, tmp_path):
    truncated = data_url(jpeg(1)[:200])
    not_base64 = "data:image/jpeg;base64,@@@not base64@@@"
    missing = str(tmp_path / "missing.jpg")
    good_file = tmp_path / "frame.jpg"
    good_file.write_bytes(jpeg(2))
    reqs = [
        request("ok1", 2),
        request("truncated", 2, urls=[data_url(jpeg(3)), truncated]),
        request("not-base64", 1, urls=[not_base64]),
        request("missing", 1, urls=[missing]),
        request("file", 2, urls=[good_file.as_uri(), str(good_file)]),
        CaptionRequest("no-messages", [], max_tokens=8),
    ]
    results = backend.caption(reqs)
    assert [r.key for r in results] == [r.key for r in reqs]
    by_key = {r.key: r for r in results}
    assert by_key["ok1"].ok and by_key["file"].ok
    for key in ("truncated", "not-base64", "missing", "no-messages"):
        r = by_key[key]
        assert isinstance(r.error, RowError) and r.error.reason == "caption_bad_input", key
        assert r.text is None and r.attempts == 1 and r.output_tokens == 0
    assert "image 1" in by_key["truncated"].error.message


def test_prompt_longer_than_the_context_fails_that_request(backend):
    (result,) = backend.caption([request("long", 2, max_tokens=backend.max_context)])
    assert result.error is not None and result.error.reason == "caption_prompt_too_long"


def test_validate_retries_are_bounded_and_counted(backend):
    seen: list[CaptionResult] = []

    def reject_first(result: CaptionResult):
        seen.append(result)
        return "too_short" if len(seen) == 1 else None

    (retried,) = backend.caption([request("r", 2, max_tokens=12)], validate=reject_first)
    assert retried.ok and retried.attempts == 2 and [r.attempts for r in seen] == [1, 2]
    # both answers are paid for: the result counts the rejected answer's tokens too
    assert retried.output_tokens == seen[1].output_tokens > seen[0].output_tokens > 0
    assert retried.prompt_tokens == 2 * seen[0].prompt_tokens

    def always(result: CaptionResult):
        return "refusal"

    (failed,) = backend.caption([request("x", 2, max_tokens=8)], validate=always)
    assert failed.attempts == 1 + backend.max_answer_retries
    assert failed.error is not None and failed.error.reason == "refusal"
    assert failed.text  # the last (rejected) answer is kept
    assert "asked 3 times" in failed.error.message


def test_streamed_requests_in_small_batches_keep_input_order(backend, monkeypatch):
    pulled = []

    def stream():
        for i in range(5):
            pulled.append(i)
            yield request(f"k{i}", 2 + i % 3, max_tokens=6)

    monkeypatch.setattr(backend, "batch_size", 2)
    firsts = []
    results = backend.caption(stream(), on_result=lambda r: firsts.append((r.key, len(pulled))))
    assert firsts[0][1] == 2  # the first results come back before the rest of the stream is pulled
    assert [r.key for r in results] == [f"k{i}" for i in range(5)]
    assert all(r.ok for r in results)


def test_requests_iterable_errors_propagate(backend):
    def broken():
        yield request("a", 2, max_tokens=4)
        raise KeyError("caller bug")

    with pytest.raises(KeyError):
        backend.caption(broken())


# --- message layout --------------------------------------------------------------------------------------------


def test_images_go_where_the_text_placeholders_are():
    url = data_url(jpeg(0))
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Frame1: <image>"}, {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "Frame2: <image>"}, {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "What happens?"},
    ]}]
    conv, images = split_messages(messages)
    assert len(images) == 2 and images[0].mode == "RGB"
    assert conv[0]["content"] == [
        {"type": "text", "text": "Frame1: "}, {"type": "image"},
        {"type": "text", "text": "Frame2: "}, {"type": "image"},
        {"type": "text", "text": "What happens?"},
    ]
    plain = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                          {"type": "text", "text": "Describe."}]}]
    conv, images = split_messages(plain)
    assert conv[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Describe."}] and len(images) == 1
    with pytest.raises(RowError) as err:
        split_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.jpg"}}]}])
    assert err.value.reason == "caption_bad_input"


# --- the model spec --------------------------------------------------------------------------------------------


def test_model_spec_forms(tmp_path):
    assert parse_model_spec("tiny-random").kind == "tiny-random"
    assert parse_model_spec("tiny-random:3").seed == 3
    assert parse_model_spec("OpenGVLab/InternVL3-78B").kind == "hub"
    (tmp_path / "config.json").write_text("{}")
    assert parse_model_spec(str(tmp_path)).kind == "path"
    for bad in ("", "tiny-random:x", "no-slash-model", str(tmp_path / "absent"), "./nowhere"):
        with pytest.raises(ValueError):
            parse_model_spec(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="config.json"):
        parse_model_spec(str(empty))


def test_resolve_model_per_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("YUME_DATA_CACHE", str(tmp_path / "cache"))
    tiny = resolve_model("tiny-random", "transformers")
    assert os.path.isdir(tiny.source) and tiny.name == "tiny-random"
    assert resolve_model("tiny-random", "vllm").source == tiny.source
    assert resolve_model("OpenGVLab/InternVL3-78B", "transformers").source == "OpenGVLab/InternVL3-78B-hf"
    assert resolve_model("OpenGVLab/InternVL3-1B-hf", "transformers").source == "OpenGVLab/InternVL3-1B-hf"
    vllm = resolve_model("OpenGVLab/InternVL3-78B", "vllm")
    assert vllm.source == "OpenGVLab/InternVL3-78B" and vllm.trust_remote_code
    assert not resolve_model(str(tiny.source), "vllm").trust_remote_code  # no auto_map in the tiny config


def test_a_local_checkpoint_loads_by_path_and_a_text_only_template_is_refused(backend, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(backend.source, ckpt)
    with TransformersBackend(str(ckpt)) as by_path:
        assert by_path.model == str(ckpt)
        (r,) = by_path.caption([request("p", 2, max_tokens=6)])
        assert r.ok
    (ckpt / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    with pytest.raises(ValueError, match="one <IMG_CONTEXT> per image"):
        TransformersBackend(str(ckpt))
