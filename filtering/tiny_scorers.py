"""Tiny random-weight stand-ins for the native VBench backend's models: the `tiny-random[:seed]` model specs.

Each is the real checkpoint's transformers class at toy sizes, so everything after construction (preprocessing,
batching, the VBench formulas) runs the same code as `facebook/dino-vitb16`, `openai/clip-vit-base-patch32` or
`openai/clip-vit-large-patch14`. Images are 32 px with 8 px patches (a 4x4 grid), which keeps a test video's
forward pass to milliseconds on a CPU while still exercising position-embedding interpolation on non-square frames.
Weights come from `torch.manual_seed(seed)` inside `fork_rng`, so building one leaves the caller's RNG alone and
the same seed always gives the same model (a tiny model saved with `save_pretrained` and loaded back by path
scores exactly like the in-process one).
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

TINY_IMAGE_SIZE = 32
_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
          "image_size": TINY_IMAGE_SIZE, "patch_size": 8}


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_dino(seed: int = 0) -> ViTModel:
    """A ViTModel like `facebook/dino-vitb16` (no pooler: VBench uses the CLS token after the final norm)."""
    config = ViTConfig(**_SHAPE, layer_norm_eps=1e-6)
    return _seeded(seed, lambda: ViTModel(config, add_pooling_layer=False))


def tiny_clip_vision(seed: int = 0) -> CLIPVisionModelWithProjection:
    """A CLIPVisionModelWithProjection like OpenAI's CLIP image towers (`image_embeds` is CLIP's encode_image)."""
    config = CLIPVisionConfig(**_SHAPE, projection_dim=16)
    return _seeded(seed, lambda: CLIPVisionModelWithProjection(config))


def tiny_aesthetic_head(in_features: int, seed: int = 0) -> torch.nn.Linear:
    """A linear head shaped like LAION's `sa_0_4_vit_l_14_linear.pth` (embedding -> one score), seeded."""
    return _seeded(seed, lambda: torch.nn.Linear(in_features, 1))


TINY_TEXT_POSITIONS = 77  # CLIP's context length


def tiny_clip_tokenizer():
    """A tokenizer for `tiny_clip_text`: the offline character-level one of the project's tiny text encoders
    (`yume_core.tiny_text`), ending every text with its end token, whose position CLIP's text tower pools."""
    from yume_core.tiny_text import tiny_t5_tokenizer

    tok = tiny_t5_tokenizer()
    tok.model_max_length = TINY_TEXT_POSITIONS
    return tok


def tiny_clip_text(seed: int = 0):
    """A CLIPTextModelWithProjection like OpenAI's CLIP text towers (`text_embeds` is CLIP's encode_text), its
    projection the width of `tiny_clip_vision`'s, so the two towers' embeddings compare."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tok = tiny_clip_tokenizer()
    config = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=TINY_TEXT_POSITIONS, projection_dim=16,
                            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.pad_token_id)
    return _seeded(seed, lambda: CLIPTextModelWithProjection(config))
