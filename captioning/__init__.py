"""Event-focused re-captions of clips (InternVL3 on vLLM in production, a tiny random InternVL offline).

CPU preparation (`iter_prepared`: sampled frames, resized, JPEG) feeds generation by a backend behind one interface
(`openai` for `vllm serve` replicas, `vllm` in-process, `transformers` for tiny-random and -hf checkpoints); answers
are judged (`check_caption`) and retried within bounds; `caption_table` is the stage over a manifest batch.
`draft_table` uses the same backends to draft event-set texts from start images (`captioning.drafting`).
"""

from captioning.assemble import join_prompt, segment_prompts
from captioning.backends.base import CaptionBackend, CaptionRequest, CaptionResult
from captioning.draft_prompts import Categories, DraftPrompt, load_categories, load_draft_prompt
from captioning.drafting import DraftConfig, EventCheck, check_event, draft_table
from captioning.factory import BACKENDS, make_backend
from captioning.frames import FrameConfig, PreparedFrames, frame_indices, iter_prepared, prepare_frames
from captioning.prompts import Prompt, PromptError, available_prompts, load_prompt
from captioning.stage import CAPTION_FIELDS, CaptionConfig, caption_table
from captioning.validate import ValidationConfig, Verdict, check_caption, clean_caption

__all__ = [
    "BACKENDS",
    "CAPTION_FIELDS",
    "CaptionBackend",
    "CaptionConfig",
    "CaptionRequest",
    "CaptionResult",
    "Categories",
    "DraftConfig",
    "DraftPrompt",
    "EventCheck",
    "FrameConfig",
    "PreparedFrames",
    "Prompt",
    "PromptError",
    "ValidationConfig",
    "Verdict",
    "available_prompts",
    "caption_table",
    "check_caption",
    "check_event",
    "clean_caption",
    "draft_table",
    "frame_indices",
    "iter_prepared",
    "join_prompt",
    "load_categories",
    "load_draft_prompt",
    "load_prompt",
    "make_backend",
    "prepare_frames",
    "segment_prompts",
]
