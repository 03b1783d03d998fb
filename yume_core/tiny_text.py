"""A tiny T5-family text encoder (UMT5) and its tokenizer, built offline: the `tiny-random` text side of every stage.

Wan conditions on UMT5-XXL and the trainer's action cache uses the same family, so tests and the demo run the real
classes (`UMT5EncoderModel`, `T5TokenizerFast`) with random weights and a character-level Unigram vocabulary made
here, not downloaded. The vocabulary is fixed (printable ASCII plus the action vocabularies' arrows), so a tokenizer
built twice gives the same ids.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # T5's order: pad=0, eos=1, unk=2
EXTRA_CHARS = "·→←↑↓"  # the action phrases' symbols


def tiny_t5_tokenizer():
    """A `T5TokenizerFast` over single characters (word-initial ones with T5's `▁`), no training and no download."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import T5TokenizerFast

    chars = sorted(set(string.printable.strip()) | set(EXTRA_CHARS))
    pieces = [(tok, 0.0) for tok in SPECIAL_TOKENS] + [("▁", -2.0)]
    pieces += [("▁" + c, -1.0) for c in chars] + [(c, -1.5) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def tiny_umt5_config(vocab_size: int, d_model: int = 32, layers: int = 2, heads: int = 2):
    """Config of a UMT5 encoder small enough to run a batch in milliseconds on a CPU."""
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=d_model // heads, d_ff=2 * d_model, num_layers=layers,
        num_heads=heads, relative_attention_num_buckets=8, relative_attention_max_distance=32,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        # untied: the checkpoint then holds encoder.embed_tokens itself, so loading never depends on re-tying it
        # (transformers 5 sometimes left the tied copy on the meta device when several loads overlapped)
        tie_word_embeddings=False,
    )


def tiny_umt5_encoder(seed: int = 0, d_model: int = 32, layers: int = 2, heads: int = 2):
    """(tokenizer, `UMT5EncoderModel` with weights drawn from `seed`), in eval mode."""
    import torch
    from transformers import UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UMT5EncoderModel(tiny_umt5_config(len(tokenizer), d_model, layers, heads))
    with torch.no_grad():
        model.encoder.embed_tokens.weight.copy_(model.shared.weight)  # the same function as a tied model
    return tokenizer, model.eval()


def save_tiny_umt5(out_dir: str | Path, seed: int = 0, **sizes) -> Path:
    """Write the tiny encoder and tokenizer as a Hugging Face checkpoint folder (loadable by `from_pretrained`)."""
    out = Path(out_dir)
    tokenizer, model = tiny_umt5_encoder(seed, **sizes)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
