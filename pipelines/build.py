"""`yume-data build`: a training mixture of any sets as one resumable Prefect flow.

Each set of the config is made by its recipe (`pipelines.recipes`): Yume-1.5's presets have three,

    real_world (sekai):          Sekai CSV + clips + trajectories -> actions -> event captions -> shards
    synthetic (t2v_synthetic):   OpenVid CSV -> prompt selection -> Wan 2.1 T2V -> VBench top N -> shards
    event (i2v_event):           start images + written events -> Wan 2.2 I2V -> review pages -> screening -> shards

and a config may add more (another Sekai split, a lab's footage, a set from an earlier build). The recipes declare
their steps; the build runs that graph (`pipelines.build_graph`) over one layout (`pipelines.build_layout`), then
writes OUT/mixture.yaml (an Energon metadataset) and the data card (README.md, card.html, card.json). Each stage is
the stage's own flow, run here as a subflow, so a build shows in Prefect as one run with a child per stage. A step
is skipped on a rerun when its inputs and settings are unchanged. Manual screening is a real pause: a set whose
screening waits for decisions holds its later steps, the other sets finish, and the build stops before the mixture
with exit status 3, saying what to open and how to resume.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from prefect import flow

from pipelines.build_config import BuildConfig, build_config, set_settings
from pipelines.build_graph import Graph, Step
from pipelines.build_layout import Layout
from pipelines.recipes import BuildContext, BuildSet
from yume_core import buildtime, remote
from yume_core.errors import InputError
from yume_core.config import ConfigError
from yume_core.mixture import InfeasibleShares, MixtureSource, default_schedule, task_weights, write_mixture
from yume_core.remote import finish_output, open_output, public_path
from yume_core.storage import atomic_write_text

EXIT_WAITING = 3  # the build stopped for manual screening (its record has "waiting": what to do)


@contextmanager
def _build_time(cfg: BuildConfig):
    """One build time for every subflow: `build_time`, else the caller's SOURCE_DATE_EPOCH, else the epoch."""
    epoch = buildtime.parse_time(cfg.build_time) if cfg.build_time else buildtime.build_epoch()
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    try:
        yield buildtime.build_time_iso(epoch)
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def plan(out: Path, cfg: BuildConfig) -> tuple[BuildContext, list[Step]]:
    """The build's step graph, every set's inputs checked: what `run_build` runs, and what a dry check looks at."""
    if not cfg.sets:
        raise InputError(out, "the build has no sets", "name at least one under `sets:` (or use --preset demo)")
    layout = Layout(out)
    wants = any(getattr(s.inputs, "generate", False) for s in cfg.sets)
    ctx = BuildContext(layout, _generated_inputs(layout, cfg) if wants else {}, cfg.base)
    steps: list[Step] = []
    for s in cfg.sets:
        s.recipe.resolved_inputs(s, ctx)
        s.recipe.check_inputs(s, ctx)
        steps += s.recipe.steps(s, ctx)
    names = [st.name for st in steps]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two steps share a name: {sorted({n for n in names if names.count(n) > 1})}")
    return ctx, steps


def run_build(output: str | Path, cfg: BuildConfig, preset: str | None = None) -> dict:
    """The flow body (`build_flow` wraps it). Returns the build record (also OUT/build.json)."""
    out = Path(open_output(output))  # a URL: its staging folder, mirrored to the bucket as files are finished
    ctx, steps = plan(out, cfg)
    graph = Graph(ctx.layout)
    with _build_time(cfg) as built_at:
        graph.run(steps)
        if graph.waiting:  # a person's decisions first: the record says what to open and how to resume
            record = _record(ctx, cfg, preset, built_at, graph, None)
            finish_output(out)
            return record
        mixture = _mixture_step(ctx, cfg, steps)
        graph.run_step(mixture)
        record = _record(ctx, cfg, preset, built_at, graph, ctx.layout.rel(ctx.layout.mixture))
        from pipelines.card import write_card

        write_card(out, record)
        print(f"\nmixture: {public_path(ctx.layout.mixture)}\ndata card: {public_path(ctx.layout.card_html)} "
              "(and README.md, card.json)")
    finish_output(out)
    return record


def _mixture_step(ctx: BuildContext, cfg: BuildConfig, steps: list[Step]) -> Step:
    """The mixture reads every step of every set: a new or removed set, or a redone step, rewrites it; a changed
    weight rewrites only it (and the card, which is written on every run)."""

    def run() -> dict:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        import shards

        sources = []
        for s in cfg.sets:
            index = pq.read_table(ctx.layout.set_dir(s.name) / shards.INDEX_FILE, columns=["status", "tasks"])
            ok = index.filter(pc.equal(index["status"], "ok"))
            found = {t for tasks in ok["tasks"].to_pylist() for t in (tasks or [])}
            tasks = tuple(t for t in s.tasks if t in found)
            if ok.num_rows and tasks and s.weight > 0:
                sources.append(MixtureSource(s.name, ctx.layout.set_dir(s.name), s.weight, tasks))
        if not sources:
            raise RuntimeError("no set has a sample: nothing to mix (see each step's summary for why rows dropped)")
        try:  # weights are shares: a mixture whose sets' tasks cannot give them is not written
            task_weights(sources, default_schedule(sources))
        except InfeasibleShares as e:
            raise ConfigError(f"sets' weights: {e}") from None
        write_mixture(ctx.layout.mixture, sources)
        return {}

    return Step("mixture", run, reads=tuple(st.name for st in steps),
                settings=[[s.name, s.weight, list(s.tasks)] for s in cfg.sets],
                outputs={"mixture": ctx.layout.mixture})


def _generated_inputs(layout: Layout, cfg: BuildConfig) -> dict[str, str]:
    """The demo's inputs, generated once under OUT/input (kept on reruns with the same settings)."""
    from pipelines import build_inputs
    from yume_core.config import to_dict

    marker = layout.inputs / "inputs.json"
    wanted = to_dict(cfg.generate)
    old = json.loads(marker.read_text()) if marker.is_file() else None
    if old is None or old.get("settings") != wanted:
        paths = build_inputs.generate_sekai(layout.inputs / "sekai", cfg.generate.clips, cfg.generate.frames)
        paths["openvid_csv"] = build_inputs.generate_openvid(layout.inputs / "openvid.csv",
                                                             cfg.generate.openvid_captions)
        atomic_write_text(marker, json.dumps({"settings": wanted, "paths": {k: layout.rel(v) for k, v in
                                                                              paths.items()}}, indent=2))
    return {k: str(remote.ensure_local_tree(layout.at(v)))  # a resumed build in a bucket, on another machine
            for k, v in json.loads(marker.read_text())["paths"].items()}


def _set_record(ctx: BuildContext, s: BuildSet) -> dict:
    return {"path": ctx.layout.rel(ctx.layout.set_dir(s.name)), "recipe": s.recipe.name, "kind": s.recipe.kind,
            "tasks": list(s.tasks), "weight": s.weight, "source": dict(s.recipe.card), **s.recipe.record(s, ctx)}


def _record(ctx: BuildContext, cfg: BuildConfig, preset: str | None, built_at: str, graph: Graph,
            mixture: str | None) -> dict:
    """OUT/build.json: what ran (a run log: step seconds differ run to run), for the card and for people."""
    held = {r.set for r in graph.records if r.status in ("waiting", "blocked")}
    record = {
        "build_time": built_at,
        "build_time_set": cfg.build_time is not None or buildtime.is_set(),
        "preset": preset,
        "settings": {"sets": {s.name: set_settings(s) for s in cfg.sets},
                     **{k: v for k, v in cfg.settings.items() if k != "sets"}},
        "steps": [r.to_dict() for r in graph.records],
        "sets": {s.name: _set_record(ctx, s) for s in cfg.sets if s.name not in held},
        "mixture": mixture,
    }
    if graph.waiting:
        record["waiting"] = graph.waiting[0].result["message"]
    atomic_write_text(ctx.layout.record, json.dumps(record, indent=2, ensure_ascii=False, default=str))
    return record


@flow(name="build")
def build_flow(output: str, config: dict | None = None, preset: str | None = None, base: str | None = None) -> dict:
    """`preset` then `config` on top (as `yume-data build --preset P --config FILE`), so a deployment's parameters
    mean what the command's options do; `base`: the folder relative inputs are in (the config file's; default the
    working directory)."""
    return run_build(output, build_config(preset, config, base), preset)


def run_build_flow(output: str | Path, cfg: BuildConfig, preset: str | None = None) -> dict:
    return build_flow(str(output), dict(cfg.given), cfg.preset if preset is None else preset, cfg.base)
