"""The synthetic and event sets: prompts chosen from OpenVid-1M, event sets paired with first-person images, and
videos generated from them with Wan 2.1 (text-to-video) and Wan 2.2 / 2.1 (image-to-video) through diffusers.

    rows = select_prompts_csv("OpenVid-1M.csv", SelectConfig(count=80_000))    # dedup + seeded sample
    events = read_event_set("events.jsonl")                                     # validated event set
    table = generate_table(read_prompts("prompts.parquet"), synth_config("wan21-t2v-720p"), "out/")

No Prefect here: `pipelines.synthesis` maps `generate_table` over resumable batches, on many GPUs.
Heavy libraries (torch, diffusers, transformers) are imported only when a model is loaded.
"""

from synthesis.dedup import content_id, normalize_captions
from synthesis.dedup_embed import EmbedConfig, SentenceEncoder, ivf_pairs
from synthesis.dedup_minhash import MinHashConfig, minhash_pairs
from synthesis.event_images import EventImageConfig, event_images, extract_event_images
from synthesis.events import CATEGORIES, EventFormatError, check_image, normalize_category, read_event_set
from synthesis.generate import (
    SYNTH_FIELDS,
    WAN_NEGATIVE_PROMPT,
    SynthConfig,
    WanWorker,
    check_against_model,
    check_prompts,
    generate_table,
    video_relpath,
    video_seconds,
    video_seed,
)
from synthesis.gpu_pool import DeviceClaim, rank_batches, resolve_rank
from synthesis.inputs import PROMPT_COLUMNS, PromptsFormatError, read_prompts
from synthesis.models import (
    CACHE_KINDS,
    CacheConfig,
    ModelLimits,
    load_pipeline,
    model_limits,
    parse_wan_spec,
    pipeline_kind,
)
from synthesis.planning import SynthPlan, calibrate, format_plan, plan_synthesis
from synthesis.presets import available_presets, load_preset, synth_config
from synthesis.select import SelectConfig, format_report, select_prompts, select_prompts_csv, write_selection
from synthesis.select_csv import OpenVidFormatError, read_openvid_csv
from synthesis.tiny_wan import TINY_KINDS, build_tiny_wan, tiny_wan_dir

__all__ = [
    "CACHE_KINDS",
    "CATEGORIES",
    "PROMPT_COLUMNS",
    "SYNTH_FIELDS",
    "TINY_KINDS",
    "WAN_NEGATIVE_PROMPT",
    "CacheConfig",
    "DeviceClaim",
    "EmbedConfig",
    "EventFormatError",
    "EventImageConfig",
    "MinHashConfig",
    "ModelLimits",
    "OpenVidFormatError",
    "PromptsFormatError",
    "SelectConfig",
    "SentenceEncoder",
    "SynthConfig",
    "SynthPlan",
    "WanWorker",
    "available_presets",
    "build_tiny_wan",
    "calibrate",
    "check_against_model",
    "check_image",
    "check_prompts",
    "content_id",
    "event_images",
    "extract_event_images",
    "format_plan",
    "format_report",
    "generate_table",
    "ivf_pairs",
    "load_pipeline",
    "load_preset",
    "minhash_pairs",
    "model_limits",
    "normalize_captions",
    "normalize_category",
    "parse_wan_spec",
    "pipeline_kind",
    "plan_synthesis",
    "rank_batches",
    "read_event_set",
    "read_openvid_csv",
    "read_prompts",
    "resolve_rank",
    "select_prompts",
    "select_prompts_csv",
    "synth_config",
    "tiny_wan_dir",
    "video_relpath",
    "video_seconds",
    "video_seed",
    "write_selection",
]
