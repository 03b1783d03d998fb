"""A tiny random-weight InternVL, built in-process: the `tiny-random` model spec of the captioning stage.

It has the architecture of `OpenGVLab/InternVL3-*-hf` (InternViT vision tower, pixel-shuffle + MLP projector, Qwen2
language model; `InternVLForConditionalGeneration` in transformers, `InternVLForConditionalGeneration` in vLLM's
registry too) at toy sizes, and is saved to a local directory laid out like a real `-hf` checkpoint (`config.json`,
`model.safetensors`, `generation_config.json`, tokenizer files with the chat template, `preprocessor_config.json`,
`processor_config.json`). Backends load it with exactly the `from_pretrained(path)` calls they use for a real
checkpoint, so tests and the demo run the production code path without a download.

What is tiny, what is real:

- Vision: 112 px tiles (the real model: 448), patch 14, so 8 x 8 patches -> pixel shuffle (0.5) -> 16 tokens per
  tile (the real model: 256). One layer, hidden size 64.
- Language: a 2-layer Qwen2 with hidden size 128. Head size 32 everywhere (vision and text), a size every attention
  kernel vLLM may pick supports, so the same directory also runs in the GPU test. Embeddings are *not* tied: with
  tied random embeddings and a residual stream dominated by the input embedding, greedy decoding keeps choosing
  the token it was just fed ("street street street ..."), which would exercise nothing downstream.
- Tokenizer: built locally with the `tokenizers` library (no download): a word-level vocabulary of a few hundred
  common English words (scene nouns, verbs, adjectives, function words) plus `.` and `,`, with the special tokens
  InternVL needs (`<|im_start|>`, `<|im_end|>`, `<img>`, `</img>`, `<IMG_CONTEXT>`, `<video>`). Prompt words outside
  the vocabulary become `[UNK]`. Random weights emit random tokens, but every token decodes to an English word, so
  the answer is word salad ("glows snowfall windy lake cyclist women move sun three park ...") that goes through
  word counts and language heuristics the way a real caption does (see the output shaping below). The decoder
  joins words with spaces and removes the space before punctuation. Tests check the shape of behaviour (counts,
  finish reasons, determinism), never the wording.
- Weights: drawn with `torch.manual_seed(seed)` (`tiny-random:<seed>` picks another seed), saved in float32.

The built directory is cached under `$YUME_DATA_CACHE` (default `~/.cache/yume-data`, or a temp dir if that is not
writable) in `tiny-random-internvl/<hash>`, the hash covering the config, vocabulary, seed and the transformers
major version (their file formats differ). It is built into a temp dir beside it and renamed into place, so
concurrent builders (pytest-xdist, a process pool) never see a half-written model; the loser's copy is discarded.
A build takes about 2 s on a 2-core CPU (after `import transformers`); loading it about 1 s.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from yume_core.storage import build_once, cache_root

__all__ = ["SPECIAL_TOKENS", "TINY_WORDS", "build_tiny_internvl", "tiny_internvl_settings"]

BUILDER_VERSION = 1
MODEL_MAX_LENGTH = 8192

# Special tokens, in id order. `<|endoftext|>` pads, `<|im_end|>` ends an answer (as in Qwen2/InternVL3).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<video>",
    "[UNK]",
)

# A word-level vocabulary: common English words, weighted towards what street-walking footage shows.
TINY_WORDS = tuple(
    ["the", "a", "an", "and", "or", "but", "of", "in", "on", "at", "to", "from", "with", "without", "by", "for", "over", "under", "near", "behind", "beside", "between", "through", "who", "which", "along", "across", "around", "into", "onto", "past", "toward", "up", "down", "out", "off", "while", "as", "then", "there", "here", "this", "that", "these", "those", "it", "its", "they", "their", "them", "he", "she", "his", "her", "we", "our", "you", "one", "two", "three", "four", "five", "several", "many", "few", "some", "all", "each", "other", "another", "more", "most", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did", "can", "will", "may", "walk", "walks", "walking", "walked", "run", "runs", "running", "stand", "stands", "standing", "sit", "sits", "sitting", "move", "moves", "moving", "cross", "crosses", "crossing", "ride", "rides", "riding", "drive", "drives", "driving", "turn", "turns", "turning", "stop", "stops", "wait", "waits", "carry", "carries", "carrying", "hold", "holds", "holding", "look", "looks", "looking", "talk", "talks", "talking", "open", "opens", "close", "closes", "pass", "passes", "passing", "enter", "enters", "leave", "leaves", "appear", "appears", "fall", "falls", "falling", "shine", "shines", "glow", "glows", "pour", "pours", "blow", "blows", "sway", "sways", "fly", "flies", "flying", "parked", "follow", "follows", "gather", "gathers", "man", "men", "woman", "women", "child", "children", "person", "people", "crowd", "group", "family", "couple", "tourist", "tourists", "vendor", "driver", "cyclist", "dog", "dogs", "cat", "bird", "birds", "pigeons", "horse", "street", "streets", "road", "roads", "sidewalk", "path", "alley", "lane", "avenue", "square", "plaza", "market", "shop", "shops", "store", "stores", "cafe", "restaurant", "bar", "hotel", "building", "buildings", "house", "houses", "tower", "towers", "bridge", "river", "canal", "lake", "sea", "beach", "harbor", "boat", "boats", "ship", "park", "garden", "tree", "trees", "grass", "flowers", "field", "hill", "mountain", "mountains", "forest", "snow", "city", "town", "village", "station", "train", "tram", "bus", "buses", "car", "cars", "taxi", "truck", "bike", "bicycle", "scooter", "motorcycle", "traffic", "light", "lights", "sign", "signs", "lamp", "lamps", "window", "windows", "door", "doors", "wall", "walls", "roof", "stairs", "steps", "gate", "fence", "bench", "umbrella", "umbrellas", "bag", "bags", "hat", "coat", "jacket", "dress", "shirt", "sky", "sun", "cloud", "clouds", "rain", "snowfall", "fog", "mist", "wind", "storm", "thunder", "lightning", "puddle", "puddles", "water", "wave", "waves", "day", "night", "morning", "evening", "afternoon", "sunset", "sunrise", "dusk", "dawn", "red", "blue", "green", "yellow", "white", "black", "gray", "brown", "orange", "pink", "purple", "golden", "dark", "bright", "colorful", "big", "small", "large", "tall", "short", "long", "wide", "narrow", "old", "new", "busy", "quiet", "empty", "crowded", "wet", "dry", "warm", "cold", "sunny", "cloudy", "rainy", "snowy", "foggy", "windy", "calm", "slow", "fast", "loud", "neon", "modern", "ancient", "historic", "stone", "wooden", "glass", "metal", "left", "right", "front", "back", "center", "side", "corner", "middle", "distance", "background", "foreground", "suddenly", "slowly", "quickly", "gently", "briefly", "again", "still", "also", "scene", "view", "camera", "moment", "event"]
) + (".", ",")


# Function words get a larger share of the output (below), so the word salad has roughly the function-word density
# of English text and a language heuristic sees English.
FUNCTION_WORDS = tuple(
    ["the", "a", "an", "and", "of", "in", "on", "with", "to", "is", "are", "was", "were", "as", "at", "by", "while", "their", "his", "her", "its", "from", "into", "through", "past", "near", "along", "under", "over", "for", "who", "which", "that", "this", "these", "those", "some", "several", "two", "three", "there", "it", "they", "he", "she"]
)

# Output shaping of the random model, as data (part of the hash), so that its word salad has the shape of a caption:
# - An untrained model's logits are h . w_t for random rows w_t; scaling a row makes that token win more often:
#   `.` x1.8 makes sentences, function words x1.3 give English-like function-word density.
# - Greedy decoding of a random model falls into loops ("is is is ...", "lake falling lake falling ..."):
#   generation_config.json sets a repetition penalty of 1.3 (transformers and vLLM both apply it by default) and
#   bans repeated 3-grams (transformers only; vLLM has no such option).
# - A random model almost never picks `<|im_end|>` on its own, or picks it at once; transformers'
#   `exponential_decay_length_penalty` (20, 1.15) raises its logit exponentially after 20 tokens, so answers end
#   after about 30 words (27-35 measured) with finish_reason "stop" (vLLM ignores the option: there it runs to
#   max_tokens).
# Measured with the event-v1 prompt, 4 seeds x 12 clips: 65% of the answers pass `captioning.validate`, the rest
# fail as `repetitive`, `truncated` (ending on "of" or ",") or `wrong_language`; with the stage's answer retries
# (which sample at a higher temperature) all 12 clips of seed 0 end accepted, 1 of them on its second ask. So the
# accept path and the retry path of the stage both run in tests and the demo.
ROW_SCALES = {".": 1.8, **{w: 1.3 for w in FUNCTION_WORDS}}
REPETITION_PENALTY = 1.3
NO_REPEAT_NGRAM_SIZE = 3
LENGTH_PENALTY_START, LENGTH_PENALTY_DECAY = 20, 1.15


def tiny_internvl_settings(seed: int = 0) -> dict:
    """Everything that determines the tiny model, as plain data (its hash names the cache directory)."""
    vocab = list(SPECIAL_TOKENS) + list(TINY_WORDS)
    if len(set(vocab)) != len(vocab):
        raise AssertionError("duplicate word in the tiny vocabulary")
    missing = sorted(set(ROW_SCALES) - set(vocab))
    if missing:
        raise AssertionError(f"output shaping names tokens outside the vocabulary: {missing}")
    image_size, patch_size, downsample_ratio = 112, 14, 0.5
    return {
        "builder_version": BUILDER_VERSION,
        "seed": int(seed),
        "vocab": vocab,
        "image_seq_length": int((image_size // patch_size) ** 2 * downsample_ratio**2),
        "vision": {
            "hidden_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "image_size": [image_size, image_size],
            "patch_size": [patch_size, patch_size],
        },
        "text": {
            "model_type": "qwen2",
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 256,
            "max_position_embeddings": MODEL_MAX_LENGTH,
            "rope_theta": 1000000.0,
        },
        "downsample_ratio": downsample_ratio,
        "row_scales": dict(ROW_SCALES),
        "repetition_penalty": REPETITION_PENALTY,
        "no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE,
        "exponential_decay_length_penalty": [LENGTH_PENALTY_START, LENGTH_PENALTY_DECAY],
    }


# The chat template of the InternVL3 `-hf` checkpoints (ChatML; one `<IMG_CONTEXT>` placeholder per image, which
# the processor expands to `<img>` + image_seq_length x `<IMG_CONTEXT>` + `</img>` per tile).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


def _settings_hash(settings: dict) -> str:
    import transformers

    payload = dict(settings, transformers_major=transformers.__version__.split(".")[0])
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_tiny_internvl(seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory of the tiny random InternVL for `seed`, building it on first use (about a second)."""
    settings = tiny_internvl_settings(seed)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "tiny-random-internvl"
    return build_once(root / _settings_hash(settings), "config.json", lambda work: _write_checkpoint(work, settings))


def _tokenizer(vocab: list[str]):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(vocab)}
    core = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordPiece's decoder joins tokens with spaces and, with cleanup, drops the space before "." and ",".
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
        padding_side="left",
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )


def _write_checkpoint(out: Path, settings: dict) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        InternVLConfig,
        InternVLForConditionalGeneration,
    )

    vocab = settings["vocab"]
    ids = {token: i for i, token in enumerate(vocab)}
    eos, pad = ids["<|im_end|>"], ids["<|endoftext|>"]
    tokenizer = _tokenizer(vocab)
    tokenizer.save_pretrained(out)

    config = InternVLConfig(
        vision_config=dict(settings["vision"]),
        text_config=dict(
            settings["text"], vocab_size=len(vocab), tie_word_embeddings=False, eos_token_id=eos, pad_token_id=pad,
            bos_token_id=None,
        ),
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=settings["image_seq_length"],
        downsample_ratio=settings["downsample_ratio"],
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings["seed"])
        model = InternVLForConditionalGeneration(config).eval()
        with torch.no_grad():
            rows = model.get_output_embeddings().weight
            for token, scale in settings["row_scales"].items():
                rows[ids[token]] *= scale
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, bos_token_id=None, repetition_penalty=settings["repetition_penalty"],
        no_repeat_ngram_size=settings["no_repeat_ngram_size"],
        exponential_decay_length_penalty=tuple(settings["exponential_decay_length_penalty"]),
    )
    model.save_pretrained(out)

    size = settings["vision"]["image_size"]
    # Written as the real InternVL3-*-hf checkpoints have it; transformers picks the torchvision ("fast") processor
    # where torchvision is installed and falls back to the PIL one where it is not (CPU machines here).
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "GotOcr2ImageProcessorFast",
        "processor_class": "InternVLProcessor",
        "crop_to_patches": False,
        "min_patches": 1,
        "max_patches": 12,
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": size[0], "width": size[1]},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }, indent=2))
    (out / "processor_config.json").write_text(json.dumps({
        "processor_class": "InternVLProcessor",
        "image_seq_length": settings["image_seq_length"],
    }, indent=2))
    (out / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "InternVLVideoProcessor",
        "processor_class": "InternVLProcessor",
        "size": {"height": size[0], "width": size[1]},
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "resample": 3,
    }, indent=2))
    if not (out / "chat_template.jinja").is_file():
        (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out / "yume_tiny_settings.json").write_text(json.dumps(settings, indent=1))
