"""The captioning flow: a clip manifest in, the same manifest with event captions and training prompts out.

Batches are resumable parts like every flow's; a batch whose part exists sends no request on a rerun. One worker by
default: the backend already keeps many requests in flight (openai) or batches on the GPU (vllm), so parallel
batches would only multiply the load on the servers. The end report gives tokens per clip and what captioning
Sekai-Real-HQ (18,208 clips) would cost in GPU-hours at the measured rate.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow

from captioning import CaptionConfig, caption_table, make_backend
from captioning.prompts import load_prompt
from captioning.stage import captioning_watch
from pipelines.batching import Parts, fingerprint, map_batches, write_parts
from pipelines.flows import StageFlow
from pipelines.reporting import report
from pipelines.runners import Resources, Runner, RunnerConfig, task_paths, task_runner
from yume_core.config import to_dict
from yume_core.errors import InputError
from yume_core.failfast import FailFast
from yume_core.identity import batch_keys
from yume_core.manifest import OK, read_manifest_schema
from yume_core.model_spec import parse_model_spec
from yume_core.remote import finish_output, open_flow_output_file, open_output
from yume_core.storage import check_writable

SEKAI_REAL_HQ_CLIPS = 18_208


@dataclass(frozen=True)
class CaptionFlowConfig:
    batch_size: int = 256
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    runner: RunnerConfig = field(default_factory=lambda: RunnerConfig(kind="threads", workers=1))
    gpus_per_endpoint: int = 4  # for the GPU-hours projection of the openai backend: one replica's GPUs


def caption_batch(batch: pa.Table, config: CaptionConfig, fail_fast: FailFast | None = None) -> pa.Table:
    return caption_table(batch, make_backend(config), config, fail_fast)


def check_endpoints(config: CaptionConfig, timeout: float = 10.0) -> None:
    """Stop at once when no replica answers, rather than after every request's retries (minutes per batch)."""
    import httpx

    problems = []
    for url in config.endpoints:
        base = url.rstrip("/") if url.rstrip("/").endswith("/v1") else url.rstrip("/") + "/v1"
        try:
            httpx.get(f"{base}/models", timeout=timeout).raise_for_status()
            return
        except httpx.HTTPError as exc:
            problems.append(f"{base}/models: {exc}")
    raise RuntimeError("no captioning endpoint answers; start the servers (yume-data serve-vlm) or fix --endpoint:\n  "
                       + "\n  ".join(problems))


def caption_gpus(config: CaptionConfig) -> float:
    """GPUs one captioning task needs by default: an openai client none (the servers hold them), a vLLM engine its
    tensor-parallel size, a transformers model one, unless it is a tiny random one (CPU)."""
    if config.backend == "vllm":
        return config.tensor_parallel_size
    if config.backend == "transformers" and not parse_model_spec(config.model).is_tiny:
        return 1
    return 0


def caption_step(table: pa.Table | Parts, out: Path, config: CaptionConfig, batch_size: int,
                 runner: Runner) -> Parts:
    """Map the captioning stage over `table` in resumable batches on `runner` (also inside the real-world flow).
    Given `Parts`, each task reads its own batch from them; the captioned parts are returned, not their rows. An
    in-process model (vllm, transformers) runs on Ray's actors, loaded once per actor (`pipelines.ray_actors`)."""
    if config.backend == "openai":
        check_endpoints(config)
    settings = {k: v for k, v in to_dict(config).items()
                if k not in ("endpoints", "concurrency", "timeout", "fail_fast")}
    inputs = fingerprint(table, settings, columns=("clip_id", "status", "video_path", "caption"))
    step = functools.partial(caption_batch, config=config, fail_fast=captioning_watch(config))
    resources = Resources(cpus=1, gpus=runner.gpus(caption_gpus(config)))
    return map_batches(step, table, out / "_work" / f"captions-{inputs}", batch_size, "captions", runner, resources,
                       keys=_video_keys(table, batch_size), holds_model=config.backend != "openai")


def _video_keys(table: pa.Table | Parts, batch_size: int) -> list[str] | None:
    """Per batch, the content of its videos as probing hashed them: a clip whose video was replaced is captioned
    again with its batch; the other batches keep their captions."""
    if "video_sha256" not in table.column_names:
        return None
    column = table.columns(["video_sha256"]) if isinstance(table, Parts) else table.select(["video_sha256"])
    return batch_keys([column["video_sha256"].to_pylist()], batch_size, table.num_rows)


def caption_figures(manifest: pa.Table | Parts, seconds: float, gpus: int, backend: str) -> dict:
    """Tokens per clip and the projected cost of Sekai-Real-HQ at the rate this run reached."""
    if isinstance(manifest, Parts):  # the few columns the figures need
        manifest = manifest.columns(["status", "caption_event", "caption_prompt_tokens", "caption_output_tokens"])
    done = manifest.filter(pc.and_(pc.equal(manifest["status"], OK), pc.is_valid(manifest["caption_event"])))
    n = done.num_rows
    if not n:
        return {"captioned": 0}
    prompt_tokens = pc.sum(done["caption_prompt_tokens"]).as_py() or 0
    output_tokens = pc.sum(done["caption_output_tokens"]).as_py() or 0
    rate = n / seconds if seconds > 0 else float("nan")
    figures = {
        "captioned": n,
        "prompt_tokens_per_clip": round(prompt_tokens / n, 1),
        "output_tokens_per_clip": round(output_tokens / n, 1),
        "clips_per_s": round(rate, 3),
        "output_tokens_per_s": round(output_tokens / seconds, 1) if seconds > 0 else None,
    }
    hours = SEKAI_REAL_HQ_CLIPS / rate / 3600
    if gpus:
        figures["sekai_real_hq_gpu_hours"] = round(hours * gpus, 1)
    else:
        figures["sekai_real_hq_cpu_hours"] = round(hours, 1)
    figures["projection_basis"] = f"{backend} backend, {gpus or 'no'} GPU(s), rate of this run"
    return figures


def _gpus(config: CaptionFlowConfig) -> int:
    c = config.caption
    if c.backend == "openai":
        return config.gpus_per_endpoint * len(c.endpoints)
    if c.backend == "vllm":
        return c.tensor_parallel_size
    return 0


def run_caption(manifest: str, output: str, config: CaptionFlowConfig) -> dict:
    manifest, output = task_paths(config.runner, manifest, output)
    manifest, output = open_flow_output_file(manifest), open_output(output)  # URLs: staged (`yume_core.remote`)
    out = Path(output)
    read_manifest_schema(manifest)
    table = Parts.of_files([manifest])  # tasks read their batches from the file's row groups
    with task_runner(config.runner) as runner:
        started = time.perf_counter()  # the rate the report projects from leaves out connecting to a cluster
        captioned = caption_step(table, out, config.caption, config.batch_size, runner)
        seconds = time.perf_counter() - started
    path = write_parts(captioned, out / "manifest.parquet", captioned.schema)
    figures = caption_figures(captioned, seconds, _gpus(config), config.caption.backend)
    summary = report(Parts.of_files([path]), out, title="captions", seconds=seconds, extra=figures)
    finish_output(out)
    return summary


def _check_inputs(manifest: str, output: str, *args, config: CaptionFlowConfig, **kwargs) -> None:
    check_caption_inputs(manifest, output, config.caption)


CAPTION = StageFlow("caption", CaptionFlowConfig, checks=_check_inputs)


@flow(name="caption")
def caption_flow(manifest: str, output: str, config: dict | None = None) -> dict:
    """`config` on top of the defaults (`pipelines.flows`)."""
    return run_caption(manifest, output, CAPTION.config(None, config))


CLIP_COLUMNS = ("clip_id", "status", "video_path", "video_frames", "caption", "segments")  # what captioning reads


def check_caption_inputs(manifest: str | None, output: str, config: CaptionConfig) -> None:
    """Stop before Prefect starts on what would fail every batch: a manifest that is not a clip manifest, a prompt
    file that is not a prompt, an output folder that cannot be written."""
    load_prompt(config.prompt)
    if manifest is not None:
        missing = [c for c in CLIP_COLUMNS if c not in read_manifest_schema(manifest).names]
        if missing:
            raise InputError(manifest, f"has no column(s) {', '.join(missing)}: it is not a clip manifest",
                             "pass the manifest.parquet that yume-data real-world wrote")
    check_writable(output)


def run_caption_flow(manifest: str, output: str, config: CaptionFlowConfig) -> dict:
    """The flow, after the checks that need no Prefect run."""
    return CAPTION.launch(caption_flow, manifest, output, config=config)

