"""`yume-data demo`: the build's tiny offline preset, then a short training run on its mixture and an inference check
of both tasks, on a laptop CPU in a few minutes.

The data side is `yume-data build --preset demo` itself (not a second orchestration beside it); this module only
adds what a person trying the toolkit wants next: proof that a trainer reads the mixture (T2V and I2V steps drawn
from every set) and that the trained model rolls out in both modes. The demo exits non-zero when a set fails
verification or the inference check fails (its verdict is built to hold on a loaded 2-core machine, see
`training_stub.infer_check`), so a run that ends well has shown what it claims.
"""

from __future__ import annotations

from pathlib import Path

import click

# Short enough for the demo's few minutes, long enough that both tasks see every set several times.
TRAIN_STEPS = 48
# The inference check's window: TSCM's per-chunk time levels off after 8 history chunks on the cpu preset.
CHECK_CHUNKS, CHECK_FROM = 20, 8
# 8 s clips (61 latents, 15 windows of the cpu preset's 4-latent chunks), where the build preset's 150 frames (38
# latents) give no window more than 33 history latents: so the long-history windows (`training_stub.windows`)
# train the channel path past what TSCM self-attends, the regime the check's rollout spends most chunks in. Costs
# no measurable CPU time against 150 frames (both ~117 s of CPU for the whole demo).
FRAMES = 241


def run_demo(output: Path, clips: int = 8, frames: int = FRAMES, steps: int = TRAIN_STEPS,
             check_chunks: int = CHECK_CHUNKS) -> dict:
    """Build the demo mixture under `output`, train on it (`output/train`), check both tasks; return the paths."""
    import torch

    import shards
    from pipelines.build import run_build_flow
    from pipelines.build_config import build_config
    from training_stub import check_checkpoint, load_config, train
    from yume_core.manifest import read_manifest

    output = Path(output)
    record = run_build_flow(output, build_config("demo", {"generate": {"clips": clips, "frames": frames}}), "demo")
    problems = []
    for name, info in record["sets"].items():
        report = shards.verify_shards(output / info["path"], decode=True)
        click.echo(f"{name}: " + shards.format_report(report).splitlines()[0].split(": ", 1)[-1])
        problems += [] if report.ok else [f"{name} shards failed verification"]
    manifest = output / next(s["outputs"]["manifest"] for s in record["steps"] if s["name"] == "real_world/real_world")
    exported = shards.export_yume(read_manifest(manifest), output / "yume-layout")

    # one intra-op thread: the cpu preset's model is small, and a second thread only adds contention on 2 cores
    torch.set_num_threads(1)
    run = output / "train"
    summary = train(None, load_config("cpu"), run, steps=steps, mixture=output / "mixture.yaml", device="cpu",
                    log=lambda m: click.echo(m, err=True))
    check = check_checkpoint(run, chunks=check_chunks, first=CHECK_FROM, last=check_chunks, device="cpu",
                             log=lambda m: click.echo(m, err=True))
    outputs = {
        "data card": output / "card.html",
        "hub card": output / "README.md",
        "mixture": output / "mixture.yaml",
        **{f"{name} set": output / info["path"] for name, info in record["sets"].items()},
        "yume layout": f"{output / 'yume-layout'} ({exported.num_rows} segments)",
        "training run": f"{run} ({summary['steps']} steps; metrics.jsonl, loss.png)",
        "infer check": f"{run / 'infer-check'} ({'PASS' if check['verdict']['passed'] else 'FAIL'}, tasks "
                       f"{', '.join(check['tasks'])})",
    }
    click.echo("\noutputs:")
    for name, path in outputs.items():
        click.echo(f"{name:>14}: {path}")
    if not check["verdict"]["passed"]:  # the demo's claim is that TSCM's cost stays flat: a failed check fails it
        problems += [f"inference check FAILED: {reason}" for reason in check["verdict"]["reasons"]]
    if problems:
        raise SystemExit("demo failed: " + "; ".join(problems))
    return {"record": record, "train": summary, "check": check, "outputs": {k: str(v) for k, v in outputs.items()}}
