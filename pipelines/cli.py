"""`yume-data`: one subcommand per flow.

Heavy imports (Prefect, PyAV) happen inside the commands that need them, so `yume-data actions` and `--help`
start fast. Settings come from a preset, then a YAML file (`--config`), then flags: later wins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipelines.cli_actions import actions, quantize_options, quantize_overrides
from pipelines.cli_build import build
from pipelines.cli_events import draft_events
from pipelines.cli_common import (
    InputErrorGroup,
    prefect_env,
    print_outputs,
    runner_options,
    runner_overrides,
    settings,
    shard_overrides,
)
from pipelines.cli_filtering import filter_videos, prescreen, review
from pipelines.cli_mix import mix
from pipelines.cli_paths import PathOrURL, storage_options
from pipelines.cli_prompts import event_images, select_prompts
from pipelines.cli_synthesis import plan, synthesize
from pipelines.cli_training import infer_check, train
from pipelines.cli_training_data import embed_actions
from pipelines.demo import FRAMES as DEMO_FRAMES


@click.group(cls=InputErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="yume-data")
@click.option("--debug", is_flag=True, help="Show the traceback of a bad-input error (also YUME_DEBUG=1).")
def main(debug: bool) -> None:
    """Build Yume-1.5-style world-model training data: actions, captions, synthesis, filtering, shards."""


@main.command("real-world")
@click.option("--csv", "csv_path", required=True, type=PathOrURL(exists=True, dir_okay=False),
              help="Sekai annotation CSV (a path or an s3:// URL).")
@click.option("--videos", required=True, type=PathOrURL(exists=True, file_okay=False),
              help="Folder (or URL prefix) of the CSV's mp4s.")
@click.option("--trajectories", required=True, type=PathOrURL(exists=True, file_okay=False),
              help="Folder (or URL prefix) of camera .npz files.")
@click.option("--output", "-o", required=True, type=PathOrURL(file_okay=False),
              help="Output folder, or a URL (s3://bucket/prefix) written through a local staging folder.")
@storage_options
@click.option("--preset", help="Named settings: demo or yume15.")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="YAML settings file.")
@click.option("--batch-size", type=int, help="Rows per task (default 256).")
@runner_options(workers="CPU count", gpus="for captioning, a vLLM engine's tensor-parallel size, 1 for a "
                                          "transformers model, 0 for tiny-random or openai",
                on_ray="the number of captioning actors, each holding its model (default: one per GPU share the "
                       "model asks for, else one per node); the other tasks take the cluster's free CPUs")
@quantize_options
@click.option("--shard-max-count", type=int, help="Samples per shard at most.")
@click.option("--shard-max-bytes", type=int, help="Bytes per shard at most.")
@click.option("--no-poses", is_flag=True, help="Leave the poses (.npy) out of the shards.")
@click.option("--fps", type=float, help="Transcode clips to this frame rate in the shards.")
@click.option("--size", type=(int, int), help="Transcode clips to WIDTH HEIGHT in the shards.")
@click.option("--captioner", type=click.Choice(["openai", "vllm", "transformers"]),
              help="Caption the ok clips with this backend before sharding.")
@click.option("--endpoint", "endpoints", multiple=True, help="OpenAI-compatible server URL (repeat for replicas).")
@click.option("--caption-model", help="Captioning model: served name, hub id, path or tiny-random.")
@click.option("--allow-outside-root", is_flag=True, default=None,
              help="Trust CSV paths that leave --videos / --trajectories (../, absolute, symlinks out); "
                   "otherwise such rows fail as path_outside_root.")
def real_world(csv_path, videos, trajectories, output, preset, config, batch_size, task_runner, workers, ray_address,
               gpus_per_worker, stride, translation_threshold, rotation_threshold, mode, drop_flags, shard_max_count,
               shard_max_bytes, no_poses, fps, size,
               captioner, endpoints, caption_model, allow_outside_root):
    """Sekai clips -> actions -> (captions) -> WebDataset shards, as a resumable Prefect flow."""
    prefect_env()
    from pipelines.real_world import RealWorldConfig, run_flow
    from yume_core.config import from_dict

    overrides = {
        "batch_size": batch_size,
        "allow_outside_root": allow_outside_root,
        "runner": runner_overrides(task_runner, workers, ray_address, gpus_per_worker),
        "actions": quantize_overrides(stride, translation_threshold, rotation_threshold, mode, drop_flags),
        "shards": shard_overrides(shard_max_count, shard_max_bytes, no_poses, fps, size),
    }
    if captioner or endpoints or caption_model:
        overrides["caption"] = {"backend": captioner, "endpoints": list(endpoints) or None, "model": caption_model}
    cfg = from_dict(RealWorldConfig, settings(preset, config, overrides))
    summary = run_flow(csv_path, videos, trajectories, output, cfg)
    print_outputs(summary)


@main.command()
@click.option("--manifest", required=True, type=PathOrURL(exists=True, dir_okay=False),
              help="Clip manifest to caption (a path or URL).")
@click.option("--output", "-o", required=True, type=PathOrURL(file_okay=False),
              help="Output folder, or a URL (s3://bucket/prefix) written through a local staging folder.")
@storage_options
@click.option("--backend", type=click.Choice(["openai", "vllm", "transformers"]), help="Default: transformers.")
@click.option("--endpoint", "endpoints", multiple=True, help="OpenAI-compatible server URL (repeat for replicas).")
@click.option("--model", help="Served model name (openai), hub id or path (vllm, transformers), or tiny-random.")
@click.option("--concurrency", type=int, help="Requests in flight over all endpoints (openai).")
@click.option("--frames", "num_frames", type=int, help="Frames per clip (default 8).")
@click.option("--prompt", help="Prompt version or YAML file (default event-v1).")
@click.option("--max-tokens", type=int, help="Longest answer in tokens.")
@click.option("--batch-size", type=int, help="Rows per task (default 256).")
@click.option("--gpus-per-endpoint", type=int, help="GPUs behind each endpoint, for the cost projection (default 4).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="YAML settings file.")
@runner_options(workers="1: the backend batches or keeps requests in flight itself",
                gpus="a vLLM engine's tensor-parallel size, 1 for a transformers model, 0 for tiny-random or openai",
                on_ray="the number of actors of a vllm or transformers model, each holding it (default: one per GPU "
                       "share the model asks for, else one per node)")
def caption(manifest, output, backend, endpoints, model, concurrency, num_frames, prompt, max_tokens, batch_size,
            gpus_per_endpoint, config, task_runner, workers, ray_address, gpus_per_worker):
    """Event-focused re-captions (InternVL3 via vLLM or any OpenAI-compatible server), resumable per batch."""
    prefect_env()
    from pipelines.captioning import CaptionFlowConfig, run_caption_flow
    from yume_core.config import from_dict

    overrides = {
        "batch_size": batch_size,
        "gpus_per_endpoint": gpus_per_endpoint,
        "runner": runner_overrides(task_runner, workers, ray_address, gpus_per_worker),
        "caption": {
            "backend": backend, "endpoints": list(endpoints) or None, "model": model, "concurrency": concurrency,
            "prompt": prompt, "max_tokens": max_tokens, "frames": {"num_frames": num_frames},
        },
    }
    cfg = from_dict(CaptionFlowConfig, settings(None, config, overrides))
    summary = run_caption_flow(manifest, output, cfg)
    print_outputs(summary)


@main.command("serve-vlm")
@click.option("--model", default="OpenGVLab/InternVL3-78B", show_default=True)
@click.option("--gpus", type=click.Choice(["4", "8"]), default="4", show_default=True, help="H100s per replica.")
@click.option("--port", default=8000, show_default=True)
@click.option("--frames", "num_frames", default=8, show_default=True, help="Images per request the server must accept.")
@click.option("--slurm", "slurm_replicas", type=int, help="Print a Slurm job array that runs N replicas instead.")
@click.option("--ray", "ray_replicas", type=int, help="Print a Ray Serve script for N replicas on a Ray cluster instead.")
@click.option("--run", is_flag=True, help="Start the server instead of printing the command.")
def serve_vlm(model, gpus, port, num_frames, slurm_replicas, ray_replicas, run):
    """Print (or --run) the `vllm serve` command for one captioning replica, or scripts for N replicas."""
    from captioning.serving import format_command, ray_serve_notes, ray_serve_script, serve_command, slurm_script

    if slurm_replicas:
        click.echo(slurm_script(model, replicas=slurm_replicas, gpus=int(gpus), port=port))
        return
    if ray_replicas:
        click.echo(ray_serve_script(model, replicas=ray_replicas, gpus=int(gpus), port=port))
        click.echo("# " + ray_serve_notes(model, ray_replicas, int(gpus), port).replace("\n", "\n# "))
        return
    cmd = serve_command(model, gpus=int(gpus), port=port, images_per_prompt=num_frames)
    if not run:
        click.echo(format_command(cmd))
        return
    os.execvp(cmd[0], cmd)


@main.group("shards")
def shards_group():
    """Write and check WebDataset shards."""


@shards_group.command("verify")
@click.argument("directory", type=PathOrURL(exists=True, file_okay=False))
@storage_options
@click.option("--decode", is_flag=True, help="Also open every mp4 and check its frames, fps and size.")
def shards_verify(directory, decode):
    """Re-read every sample of every shard and check it against the index, and every tar against its completion
    marker (size, sha256, samples). Exit 1 on any problem."""
    import shards

    rep = shards.verify_shards(directory, decode=decode)
    click.echo(shards.format_report(rep))
    sys.exit(0 if rep.ok else 1)


@shards_group.command("write")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--shard-max-count", type=int)
@click.option("--shard-max-bytes", type=int)
@click.option("--no-poses", is_flag=True)
@click.option("--fps", type=float)
@click.option("--size", type=(int, int))
def shards_write(manifest, output, shard_max_count, shard_max_bytes, no_poses, fps, size):
    """Write shards for the ok rows of a manifest (without running a flow)."""
    import shards
    from yume_core.config import from_dict, merge
    from yume_core.manifest import read_manifest

    overrides = shard_overrides(shard_max_count, shard_max_bytes, no_poses, fps, size)
    cfg = from_dict(shards.ShardConfig, merge({}, overrides), "shards")
    index = shards.write_shards(read_manifest(manifest), output, cfg)
    click.echo(f"{index.num_rows} samples in {len(set(index['shard'].to_pylist()))} shards under {output}")


@main.command("export-yume")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--min-frames", default=33, show_default=True, type=click.IntRange(min=2),
              help="Drop shorter segments (Yume's loader samples 33 frames).")
def export_yume(manifest, output, min_frames):
    """Write action segments in the folder layout Yume's trainer reads (Keys_*_Mouse_*/<stem>_frames_a-b.*), the
    full clips its loader takes history from (full_mp4/<youtubeId>/<stem>.mp4) and a README naming both."""
    import shards
    from yume_core.manifest import format_summary, read_manifest, summarize

    written = shards.export_yume(read_manifest(manifest), output, min_frames=min_frames)
    click.echo(format_summary(summarize(written), f"export-yume -> {output}"))


@main.command()
@click.option("--output", "-o", default="yume-data-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--clips", default=8, show_default=True, help="Good Sekai-format clips to generate (plus broken ones).")
@click.option("--frames", default=DEMO_FRAMES, show_default=True,
              help="Frames per clip (30 fps); the default is long enough for training windows whose history goes past "
                   "the 32 latents TSCM self-attends.")
@click.option("--steps", default=48, show_default=True, type=click.IntRange(min=1),
              help="Training steps on the mixture (T2V and I2V alternate).")
def demo(output, clips, frames, steps):
    """`build --preset demo` (three sets, mixture, data card; tiny models, offline, CPU), then a short training run
    on the mixture and an inference check of both tasks. Rerunning skips the finished build steps."""
    prefect_env()
    from pipelines.demo import run_demo

    run_demo(Path(output), clips=clips, frames=frames, steps=steps)


for _command in (
    actions,
    build,
    mix,
    embed_actions,
    select_prompts,
    event_images,
    draft_events,
    synthesize,
    plan,
    train,
    infer_check,
    filter_videos,
    prescreen,
    review,
):
    main.add_command(_command)

if __name__ == "__main__":
    main()
