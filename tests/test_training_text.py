"""Text side of the trainer: the UMT5 encoder behind a model spec, the action-phrase cache and the caption cache."""

import json

import pytest
import torch
from click.testing import CliRunner

from pipelines.cli import main
from training_stub.text import (
    ActionCache,
    EventTextCache,
    TextEncoder,
    embed_actions,
)
from yume_core.actions import load_vocabulary, phrase_table
from yume_core.storage import TMP_MARK
from yume_core.tiny_text import save_tiny_umt5, tiny_t5_tokenizer

TEXTS = ["A tram stops and people get off.", "Snow.", ""]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder("tiny-random:1", max_length=64)


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory):
    return embed_actions(tmp_path_factory.mktemp("actions") / "actions.safetensors", "tiny-random:1")


def test_encoder_returns_one_unpadded_tensor_per_text(encoder):
    out = encoder.encode(TEXTS)
    ids = tiny_t5_tokenizer()(TEXTS)["input_ids"]
    assert encoder.dim == 32
    assert [tuple(t.shape) for t in out] == [(len(i), 32) for i in ids]  # eos included, no padding
    assert all(t.dtype == torch.float32 for t in out)
    alone = [encoder.encode([t])[0] for t in TEXTS]  # padding in a batch changes nothing
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out, alone))
    assert encoder.encode(["x" * 500])[0].shape == (64, 32)  # truncated at max_length


def test_checkpoint_directories_load_the_same_model(encoder, tmp_path):
    save_tiny_umt5(tmp_path / "umt5", seed=1)
    # a diffusers Wan pipeline keeps its UMT5 and tokenizer in subfolders
    save_tiny_umt5(tmp_path / "wan" / "text_encoder", seed=1)
    tiny_t5_tokenizer().save_pretrained(tmp_path / "wan" / "tokenizer")
    (tmp_path / "wan" / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    want = encoder.encode(TEXTS)
    for spec in (tmp_path / "umt5", tmp_path / "wan"):
        got = TextEncoder(str(spec), max_length=64).encode(TEXTS)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(want, got)), spec
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="UMT5 or T5"):
        TextEncoder(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="neither"):
        TextEncoder("not a spec")


def test_the_phrases_cached_are_the_quantizers_strings_and_their_parts():
    phrases = load_vocabulary("yume15").all_phrases()
    vocab = load_vocabulary("yume15")
    assert set(phrase_table("yume15")) <= set(phrases) and len(set(phrase_table("yume15"))) == 81
    assert len(phrases) == 81 + 18  # + each key and mouse phrase alone; the prefix alone is the no-action phrase
    assert vocab.prefix in phrases and set(vocab.keys.values()) <= set(phrases)
    assert "First-person perspective. The camera pushes forward (W). The camera pans to the right (→)." in phrases
    with pytest.raises(ValueError, match="neither a packaged name"):
        embed_actions("unused.safetensors", "tiny-random", vocabulary="no-such-vocabulary")


def test_action_cache_holds_every_phrase_once_encoded(cache_file, encoder):
    cache = ActionCache.load(cache_file)
    phrases = load_vocabulary("yume15").all_phrases()
    assert len(cache) == len(phrases) and all(p in cache for p in phrases)
    assert cache.dim == 32
    assert cache.metadata["encoder"] == "tiny-random:1" and cache.metadata["vocabulary"] == "yume15"
    longest = max(len(i) for i in tiny_t5_tokenizer()(phrases)["input_ids"])
    assert int(cache.metadata["max_length"]) == longest > 64  # no action phrase is truncated
    probe = ["First-person perspective.", "The camera tilts up (↑)."]
    for phrase, want in zip(probe, encoder.encode(probe)):
        assert torch.allclose(cache.get(phrase), want, atol=1e-5)
    with pytest.raises(KeyError, match="embed-actions --vocabulary"):
        cache.get("Person moves forward (W).")
    assert not [p for p in cache_file.parent.iterdir() if p.name.startswith(TMP_MARK)]


def test_embed_actions_refuses_to_truncate_and_takes_a_phrase_list(tmp_path):
    with pytest.raises(ValueError, match="more than max_length 20"):
        embed_actions(tmp_path / "short.safetensors", max_length=20)
    assert not (tmp_path / "short.safetensors").exists()
    path = embed_actions(tmp_path / "two.safetensors", phrases=["Go.", "Stop.", "Go."], vocabulary="custom")
    cache = ActionCache.load(path)
    assert len(cache) == 2 and cache.metadata["vocabulary"] == "custom"
    (tmp_path / "other.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}      ")
    with pytest.raises(ValueError, match="not an action cache"):
        ActionCache.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="yume-data embed-actions"):
        ActionCache.load(tmp_path / "missing.safetensors")


def test_event_text_cache_encodes_each_caption_once_and_stays_bounded(encoder):
    cache = EventTextCache(encoder, max_items=2)
    a1 = cache.get(TEXTS[0])
    assert cache.get(TEXTS[0]) is a1 and (cache.hits, cache.misses) == (1, 1)
    assert torch.allclose(a1, encoder.encode([TEXTS[0]])[0])
    cache.get(TEXTS[1])
    cache.get(TEXTS[0])  # most recent again
    cache.get(TEXTS[2])  # evicts TEXTS[1], the least recently used
    assert len(cache) == 2 and cache.misses == 3
    cache.get(TEXTS[0])
    assert cache.misses == 3
    cache.get(TEXTS[1])
    assert cache.misses == 4


def test_cli_embed_actions(tmp_path):
    runner = CliRunner()
    out = tmp_path / "actions.safetensors"
    result = runner.invoke(main, ["embed-actions", "-o", str(out), "--encoder", "tiny-random:2"])
    assert result.exit_code == 0, result.output
    assert "99 action phrases of vocabulary 'yume15'" in result.output and "dim 32" in result.output
    cache = ActionCache.load(out)
    assert set(cache.tensors) == set(load_vocabulary("yume15").all_phrases())
    assert cache.metadata["encoder"] == "tiny-random:2"
    bad = runner.invoke(main, ["embed-actions", "-o", str(tmp_path / "x.safetensors"), "--vocabulary", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output
    short = runner.invoke(main, ["embed-actions", "-o", str(tmp_path / "y.safetensors"), "--max-length", "8"])
    assert short.exit_code == 1 and "raise max_length" in short.output
