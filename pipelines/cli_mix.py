"""`yume-data mix info MIXTURE`: what a mixture file holds, and what a training run on it would draw."""

from __future__ import annotations

import json

import click

from pipelines.cli_paths import PathOrURL, storage_options


def mixture_info(path: str, simulate: int = 0, batch: int = 1, schedule: tuple[str, ...] = ("t2v", "i2v"),
                 seed: int = 0) -> dict:
    """Per set: weight, tasks, samples, hours, bytes (from each set's index); the per-task weights the trainer draws
    with on `schedule` (solved so that every set gets its weight's share); with `simulate` steps, the realised share
    per set and per task of that many training steps against the requested ones."""
    from shards import set_stats
    from yume_core.errors import InputError
    from yume_core.mixture import MixtureSampler, read_mixture

    try:
        sources = read_mixture(path)
    except ValueError as e:
        raise InputError(path, str(e).removeprefix(f"{path}: "), "give the mixture.yaml of a finished build") from None
    try:
        sampler = MixtureSampler(sources, schedule, seed)
    except ValueError as e:  # shares the tasks and the schedule cannot give: the message says the bound
        raise InputError(path, str(e)) from None
    sets = []
    for s in sources:
        stats = set_stats(s.path)
        sets.append({"set": s.name, "path": str(s.path), "weight": s.weight, "tasks": list(s.tasks),
                     "samples": stats["samples"], "hours": stats["hours"], "bytes": stats["bytes"],
                     "shards": stats["shards"]})
    info = {"mixture": str(path), "sets": sets, "schedule": list(schedule), "requested": sampler.requested(),
            "task_weights": sampler.task_shares()}
    if simulate:
        info["simulation"] = sampler.simulate(simulate, batch)
    return info


def format_info(info: dict) -> str:
    lines = [f"{info['mixture']}", f"{'set':<12}{'weight':>8}  {'tasks':<9}{'samples':>9}{'hours':>9}{'MB':>10}"]
    for s in info["sets"]:
        lines.append(f"{s['set']:<12}{s['weight']:>8.3g}  {'+'.join(s['tasks']):<9}{s['samples']:>9}"
                     f"{s['hours']:>9.3f}{s['bytes'] / 1e6:>10.1f}")
    sim = info.get("simulation") or {}
    steps = "/".join(info["schedule"])
    lines += ["", f"per-task weights on the schedule {steps}, solved so that every set's share of the samples is its "
                  "weight" + (f"; realized: the share of each task's samples in {sim['samples']} simulated" if sim
                              else "") + ":"]
    lines.append(f"{'set':<12}{'task':<6}{'weight':>8}" + (f"{'realized':>10}" if sim else ""))
    for task, weights in info["task_weights"].items():
        for name, w in weights.items():
            got = f"{sim['realized_by_task'].get(task, {}).get(name, 0.0):>10.3f}" if sim else ""
            lines.append(f"{name:<12}{task:<6}{w:>8.3f}{got}")
    if sim:
        lines += ["", f"{'set':<12}{'requested':>10}{'realized':>10}"]
        for name, want in sim["requested"].items():
            lines.append(f"{name:<12}{want:>10.3f}{sim['realized'].get(name, 0.0):>10.3f}")
        lines.append("per task: " + ", ".join(f"{t} {v:.3f}" for t, v in sim["tasks"].items()))
    return "\n".join(lines)


@click.group("mix")
def mix() -> None:
    """Inspect a training mixture (an Energon metadataset written by `yume-data build`)."""


@mix.command("info")
@click.argument("mixture", type=PathOrURL(exists=True, dir_okay=False))
@storage_options
@click.option("--simulate", type=click.IntRange(min=0), default=0, help="Draw this many training steps and compare "
              "the realised share per set and task with the requested weights (no model, no GPU).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per step.")
@click.option("--schedule", default="t2v,i2v", show_default=True, help="Task per step, cycled.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(mixture, simulate, batch, schedule, seed, as_json):
    """Per set samples, hours and bytes; with --simulate N the realised against the requested shares."""
    tasks = tuple(t.strip() for t in schedule.split(",") if t.strip())
    result = mixture_info(mixture, simulate, batch, tasks, seed)
    click.echo(json.dumps(result, indent=2) if as_json else format_info(result))
