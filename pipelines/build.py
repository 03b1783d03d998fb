"""`yume-data build`: the whole Yume-1.5 training mixture as one resumable Prefect flow.

    real world:  Sekai CSV + clips + trajectories -> actions -> event captions -> shards     -> OUT/real_world
    synthetic:   OpenVid CSV -> prompt selection -> Wan 2.1 T2V -> VBench top N -> shards    -> OUT/synthetic
    event:       start images + written events -> Wan 2.2 I2V -> review pages -> screening
                 -> shards                                                                    -> OUT/event
    then:        OUT/mixture.yaml (Energon metadataset), OUT/README.md + card.html + card.json (the data card)

Each stage is the stage's own flow, run here as a subflow, so a build shows in Prefect as one run with a child
per stage. Work folders live under OUT/work/; each step is skipped on a rerun when its inputs and settings are
unchanged (`pipelines.build_steps`). Manual screening is a real pause: with the `decisions` policy and no
decisions file the build stops after writing the review pages, says what to open and how to resume, and exits 3;
the `accept_all` policy (the demo's) keeps every generated event video, and the card says the set was not screened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow

from yume_core import buildtime, remote
from yume_core.config import ConfigError, from_dict, load_yaml, merge, to_dict
from yume_core.errors import InputError
from yume_core.manifest import read_manifest, write_manifest
from yume_core.mixture import (MIXTURE_FILE, InfeasibleShares, MixtureSource, default_schedule, task_weights,
                               write_mixture)
from yume_core.remote import finish_output, open_output, public_path
from yume_core.samples import DEFAULT_TASKS, SETS, check_tasks
from yume_core.storage import atomic_write_text

BUILD_PRESETS = Path(__file__).parent / "build_presets"
RECORD_FILE = "build.json"
EXIT_WAITING = 3  # the build stopped for manual screening (its record has "waiting": what to do)


@dataclass(frozen=True)
class InputsConfig:
    sekai_csv: str | None = None
    videos: str | None = None
    trajectories: str | None = None
    openvid_csv: str | None = None  # OpenVid-1M captions for the synthetic set
    events: str | None = None  # event set (JSONL or CSV with images); None: cut start frames and use `generate`'s
    generate: bool = False  # demo: generate every input above under OUT/input (offline)
    clips: int = 8  # generated Sekai clips
    frames: int = 150  # frames per generated clip
    openvid_captions: int = 24  # generated OpenVid rows


@dataclass(frozen=True)
class ScreeningConfig:
    policy: str = "decisions"  # decisions: wait for a decisions file | accept_all: keep every video, unscreened
    decisions: str | None = None  # key,decision,note CSV (or JSONL) exported by the review pages
    unreviewed: str = "drop"  # what happens to videos the decisions file does not name

    def __post_init__(self):
        if self.policy not in ("decisions", "accept_all"):
            raise ConfigError(f"screening.policy must be decisions or accept_all, got {self.policy!r}")


@dataclass(frozen=True)
class MixWeights:
    real_world: float = 0.5
    synthetic: float = 0.25
    event: float = 0.25


@dataclass(frozen=True)
class MixtureConfig:
    # Yume-1.5 gives no proportions; these are the defaults of this toolkit, reported as requested vs realised.
    weights: MixWeights = field(default_factory=MixWeights)
    # The paper says both "used exclusively for T2V" and "for both T2V and I2V" of the event set: both by default.
    event_tasks: tuple[str, ...] = DEFAULT_TASKS["event"]


@dataclass(frozen=True)
class BuildConfig:
    inputs: InputsConfig = field(default_factory=InputsConfig)
    # each stage's own settings, as its command takes them; `preset` names that command's preset
    real_world: dict = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)  # synthesis.SelectConfig
    synthetic: dict = field(default_factory=dict)  # the T2V synthesis flow
    filter: dict = field(default_factory=dict)  # the VBench filter flow
    event_images: dict = field(default_factory=dict)  # synthesis.EventImageConfig (start frames from Sekai clips)
    event: dict = field(default_factory=dict)  # the I2V synthesis flow
    review: dict = field(default_factory=lambda: {"page_size": 200})
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    shards: dict = field(default_factory=dict)  # shards.ShardConfig of the synthetic and event sets
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    build_time: str | None = None  # ISO 8601 or epoch seconds; default SOURCE_DATE_EPOCH, else 1970-01-01


@dataclass(frozen=True)
class Stages:
    """The typed configs of every stage, built (and checked) before any work starts."""

    real_world: Any
    prompts: Any
    synthetic: Any
    filter: Any
    event_images: Any
    event: Any
    shards: Any


def build_config(preset: str | None, settings: Mapping[str, Any] | None = None) -> BuildConfig:
    """A build preset (`demo`, `yume15` or a YAML path), then `settings` (a config file + flags) on top."""
    data: dict = {}
    if preset:
        path = Path(preset) if preset.endswith((".yaml", ".yml")) else BUILD_PRESETS / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in BUILD_PRESETS.glob("*.yaml"))
            raise ConfigError(f"unknown build preset {preset!r}; known: {known} or a YAML file")
        data = load_yaml(path)
    return from_dict(BuildConfig, merge(data, dict(settings or {})), "build")


def stage_configs(cfg: BuildConfig) -> Stages:
    import shards
    from pipelines.filtering import filter_flow_config
    from pipelines.real_world import RealWorldConfig, real_world_config
    from pipelines.synthesis import synth_flow_config
    from synthesis import EventImageConfig, SelectConfig

    def split(section: dict) -> tuple[str | None, dict]:
        section = dict(section)
        return section.pop("preset", None), section

    rw_preset, rw = split(cfg.real_world)
    syn_preset, syn = split(cfg.synthetic)
    flt_preset, flt = split(cfg.filter)
    ev_preset, ev = split(cfg.event)
    check_tasks(cfg.mixture.event_tasks, "mixture.event_tasks")
    return Stages(
        real_world=(real_world_config(rw_preset, rw) if rw_preset
                    else from_dict(RealWorldConfig, rw, "build.real_world")),
        prompts=from_dict(SelectConfig, cfg.prompts, "build.prompts"),
        synthetic=synth_flow_config(syn_preset, syn),
        filter=filter_flow_config(flt_preset, flt),
        event_images=from_dict(EventImageConfig, cfg.event_images, "build.event_images"),
        event=synth_flow_config(ev_preset or "wan22-i2v-720p", ev),
        shards=from_dict(shards.ShardConfig, cfg.shards, "build.shards"),
    )


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


def _device() -> tuple[str, int]:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "cpu", 0


# ------------------------------------------------------------------------------------------------ the flow


def run_build(output: str | Path, cfg: BuildConfig, preset: str | None = None) -> dict:
    """The flow body (`build_flow` wraps it). Returns the build record (also OUT/build.json)."""
    from pipelines.build_steps import Steps

    stages = stage_configs(cfg)  # every typo in every section fails here, before any work
    out = Path(open_output(output))  # a URL: its staging folder, mirrored to the bucket as files are finished
    inputs = _resolve_inputs(out, cfg.inputs)
    steps = Steps(out)
    sets: dict[str, dict] = {}
    with _build_time(cfg) as built_at:
        if inputs.get("sekai_csv"):
            sets["real_world"] = _real_world(out, inputs, stages, steps)
        if inputs.get("openvid_csv"):
            sets["synthetic"] = _synthetic(out, inputs, stages, steps)
        if inputs.get("events") or inputs.get("sekai_csv"):
            event = _event(out, inputs, cfg, stages, steps)
            if event is None:  # waits for screening decisions: the record says what to open, how to resume
                record = _record(out, cfg, preset, built_at, steps, sets, None)
                finish_output(out)
                return record
            sets["event"] = event
        if not sets:
            raise InputError(out, "the build has no inputs", "set inputs.sekai_csv/videos/trajectories, "
                             "inputs.openvid_csv or inputs.events (or inputs.generate: true for the demo)")
        mixture = steps.run("mixture", [to_dict(cfg.mixture),
                                        steps.fp(*(f"{s}_shards" for s in sets))],
                            lambda: _write_mixture(out, cfg.mixture, sets))
        record = _record(out, cfg, preset, built_at, steps, sets, mixture["mixture"])
        from pipelines.card import write_card

        card = write_card(out, record)
        print(f"\nmixture: {public_path(out / MIXTURE_FILE)}\ndata card: {public_path(out / 'card.html')} "
              "(and README.md, card.json)")
        record["card"] = {k: str(v) for k, v in card.items()} if isinstance(card, dict) else str(card)
    finish_output(out)
    return record


def _resolve_inputs(out: Path, cfg: InputsConfig) -> dict:
    """Paths the steps read; the demo's are generated once under OUT/input (kept on reruns)."""
    from pipelines import build_inputs

    got = {k: getattr(cfg, k) for k in ("sekai_csv", "videos", "trajectories", "openvid_csv", "events")}
    if cfg.generate:
        sekai_dir, openvid = out / "input" / "sekai", out / "input" / "openvid.csv"
        marker = out / "input" / "inputs.json"
        wanted = {"clips": cfg.clips, "frames": cfg.frames, "openvid_captions": cfg.openvid_captions}
        old = json.loads(marker.read_text()) if marker.is_file() else None
        if old is None or old.get("settings") != wanted:
            paths = build_inputs.generate_sekai(sekai_dir, cfg.clips, cfg.frames)
            paths["openvid_csv"] = build_inputs.generate_openvid(openvid, cfg.openvid_captions)
            rel = {k: os.path.relpath(v, out) for k, v in paths.items()}
            atomic_write_text(marker, json.dumps({"settings": wanted, "paths": rel}, indent=2))
        paths = {k: str(remote.ensure_local_tree(out / v))  # a resumed build in a bucket, on another machine
                 for k, v in json.loads(marker.read_text())["paths"].items()}
        got.update({k: got[k] or v for k, v in paths.items()})
    if got["sekai_csv"] and not (got["videos"] and got["trajectories"]):
        raise InputError(got["sekai_csv"], "a Sekai CSV needs its clips and camera files",
                         "set inputs.videos and inputs.trajectories")
    for key, value in got.items():
        if value and not (remote.exists(value) if remote.is_url(value) else Path(value).exists()):
            raise InputError(value, f"inputs.{key} does not exist", "fix the path in the build config")
    return got


def _real_world(out: Path, inputs: dict, stages: Stages, steps) -> dict:
    import shards
    from pipelines.build_steps import files_digest
    from pipelines.real_world import run_flow

    work, set_dir = out / "work" / "real-world", out / "real_world"
    device, gpus = _device() if stages.real_world.caption is not None else ("cpu", 0)

    def run() -> dict:
        run_flow(inputs["sekai_csv"], inputs["videos"], inputs["trajectories"], str(work), stages.real_world,
                 shards_dir=str(set_dir))
        shards.prepare_energon(set_dir, "real_world")
        return {"summary": "work/real-world/summary.json", "manifest": "work/real-world/manifest.parquet"}

    parts = [_outcome_settings(stages.real_world),
             files_digest([inputs["sekai_csv"], inputs["videos"], inputs["trajectories"]])]
    result = steps.run("real_world", parts, run, device, gpus)
    steps.fingerprints["real_world_shards"] = steps.fingerprints["real_world"]
    return {"path": "real_world", "tasks": list(DEFAULT_TASKS["real_world"]), **result}


def _synthetic(out: Path, inputs: dict, stages: Stages, steps) -> dict:
    import shards
    from pipelines.build_steps import files_digest
    from pipelines.filtering import run_filter_flow
    from pipelines.synthesis import run_synthesis_flow
    from synthesis import select_prompts_csv

    work = out / "work" / "synthetic"
    device, gpus = _device()

    def select() -> dict:
        report = select_prompts_csv(inputs["openvid_csv"], work / "prompts.parquet", stages.prompts)
        # every input row's verdict (selected, duplicate, not sampled, ...) sits beside the selection
        return {"selected": report.get("selected") if isinstance(report, dict) else None,
                "manifest": "work/synthetic/prompts.rows.parquet"}

    steps.run("prompts", [to_dict(stages.prompts), files_digest([inputs["openvid_csv"]])], select)

    def synthesize() -> dict:
        run_synthesis_flow(str(work / "prompts.parquet"), str(work / "videos"), stages.synthetic)
        return {"summary": "work/synthetic/videos/summary.json", "manifest": "work/synthetic/videos/manifest.parquet"}

    steps.run("synthesis_t2v", [_synth_settings(stages.synthetic), steps.fp("prompts")], synthesize, device, gpus)

    def score() -> dict:
        run_filter_flow(str(work / "videos" / "manifest.parquet"), str(work / "filtered"), stages.filter)
        return {"summary": "work/synthetic/filtered/summary.json",
                "manifest": "work/synthetic/filtered/manifest.parquet"}

    steps.run("filter", [_outcome_settings(stages.filter), steps.fp("synthesis_t2v")], score, device, gpus)

    def write() -> dict:
        manifest = work / "filtered" / "manifest.parquet"
        shards.write_set_shards(read_manifest(manifest), out / "synthetic", "synthetic", stages.shards,
                                provenance={"flow": "build", "set": "synthetic"}, base_dir=manifest.parent)
        return {}

    steps.run("synthetic_shards", [to_dict(stages.shards), steps.fp("filter")], write)
    return {"path": "synthetic", "tasks": list(DEFAULT_TASKS["synthetic"]),
            "filter_manifest": "work/synthetic/filtered/manifest.parquet",
            "summary": "work/synthetic/filtered/summary.json"}


def _event(out: Path, inputs: dict, cfg: BuildConfig, stages: Stages, steps) -> dict | None:
    """The event set up to its shards; None when it waits for screening decisions."""
    import shards
    from filtering import apply_review, make_review
    from filtering.review import read_decisions
    from pipelines.build_inputs import write_demo_events
    from pipelines.build_steps import files_digest
    from pipelines.filtering import relocated
    from pipelines.reporting import report
    from pipelines.synthesis import run_synthesis_flow
    from synthesis import event_images

    work = out / "work" / "event"
    device, gpus = _device()
    events = inputs.get("events")
    if not events:  # start frames cut from the real-world clips, paired with the demo's written events
        def cut() -> dict:
            event_images(inputs["sekai_csv"], inputs["videos"], work / "images", stages.event_images)
            write_demo_events(work / "images" / "manifest.parquet", work / "events.jsonl")
            return {"summary": "work/event/images/summary.json"}

        steps.run("event_images", [to_dict(stages.event_images), files_digest([inputs["sekai_csv"],
                                                                                inputs["videos"]])], cut)
        events = str(work / "events.jsonl")
        events_fp = steps.fp("event_images")
    else:
        events_fp = [files_digest([events])]

    def synthesize() -> dict:
        run_synthesis_flow(events, str(work / "videos"), stages.event)
        return {"summary": "work/event/videos/summary.json", "manifest": "work/event/videos/manifest.parquet"}

    steps.run("synthesis_i2v", [_synth_settings(stages.event), events_fp], synthesize, device, gpus)
    videos = work / "videos" / "manifest.parquet"

    def pages() -> dict:
        index = make_review(read_manifest(videos), videos.parent, work / "review", title="event set",
                            **cfg.review)
        return {"pages": os.path.relpath(index, out)}

    review = steps.run("review_pages", [cfg.review, steps.fp("synthesis_i2v")], pages)
    screening = cfg.screening
    if screening.policy == "decisions" and not screening.decisions:
        steps.waiting("screening", [to_dict(screening)], {
            "pages": review["pages"],
            "message": (f"the event set waits for manual screening: open {out / review['pages']} in a browser, "
                        "keep (y) or reject (n) each video, press \"Download decisions\", then resume with the "
                        "same command plus --decisions <the downloaded CSV> (or --accept-all to keep every video "
                        "unscreened)")})
        return None

    def screen() -> dict:
        table = read_manifest(videos)
        if screening.policy == "accept_all":
            ok = [r["prompt_id"] for r in table.select(["prompt_id", "status"]).to_pylist() if r["status"] == "ok"]
            decisions = {k: ("keep", "accept_all policy: not screened") for k in ok}
            source = "the accept_all policy"
        else:
            decisions, source = read_decisions(screening.decisions), str(screening.decisions)
        table = apply_review(table, decisions, unreviewed=screening.unreviewed, source=source)
        screened = work / "screened"
        table = relocated(table, videos.parent, screened)
        write_manifest(table, screened / "manifest.parquet")
        from filtering import review_counts

        report(table, screened, title="screening", seconds=0.0, extra=review_counts(table))
        return {"summary": "work/event/screened/summary.json", "manifest": "work/event/screened/manifest.parquet"}

    decisions_digest = files_digest([screening.decisions]) if screening.decisions else None
    steps.run("screening", [to_dict(screening), decisions_digest, steps.fp("synthesis_i2v")], screen)
    tasks = check_tasks(cfg.mixture.event_tasks, "mixture.event_tasks")

    def write() -> dict:
        manifest = work / "screened" / "manifest.parquet"
        shards.write_set_shards(read_manifest(manifest), out / "event", "event", stages.shards,
                                provenance={"flow": "build", "set": "event", "screening_policy": screening.policy},
                                tasks=tasks, base_dir=manifest.parent)
        return {}

    steps.run("event_shards", [to_dict(stages.shards), list(tasks), steps.fp("screening")], write)
    return {"path": "event", "tasks": list(tasks), "summary": "work/event/screened/summary.json",
            "screened_manifest": "work/event/screened/manifest.parquet",
            "screening": {"policy": screening.policy, "decisions": screening.decisions}}


def _outcome_settings(config) -> dict:
    """A stage's settings less its runner: the same outputs come from threads, processes or a Ray cluster."""
    settings = to_dict(config)
    settings.pop("runner")
    return settings


def _synth_settings(config) -> dict:
    """What changes the videos (not where or how fast they are made)."""
    from synthesis.generate import fingerprint_settings

    return fingerprint_settings(config.synth)


def _write_mixture(out: Path, cfg: MixtureConfig, sets: dict[str, dict]) -> dict:
    import pyarrow.parquet as pq

    sources = []
    for name in SETS:
        if name not in sets:
            continue
        index = out / sets[name]["path"] / "index.parquet"
        ok = sum(1 for s in pq.read_table(index, columns=["status"])["status"].to_pylist() if s == "ok")
        weight = getattr(cfg.weights, name)
        if ok and weight > 0:
            sources.append(MixtureSource(name, out / sets[name]["path"], weight, tuple(sets[name]["tasks"])))
    if not sources:
        raise RuntimeError("no set has a sample: nothing to mix (see each step's summary for why rows dropped)")
    try:  # weights are shares: a mixture whose sets' tasks cannot give them is not written (a rerun redoes this step)
        task_weights(sources, default_schedule(sources))
    except InfeasibleShares as e:
        raise ConfigError(f"mixture.weights: {e}") from None
    write_mixture(out / MIXTURE_FILE, sources)
    return {"mixture": MIXTURE_FILE}


def _record(out: Path, cfg: BuildConfig, preset: str | None, built_at: str, steps, sets: dict,
            mixture: str | None) -> dict:
    """OUT/build.json: what ran (a run log: step seconds differ run to run), for the card and for people."""
    weights = to_dict(cfg.mixture.weights)
    record = {
        "build_time": built_at,
        "build_time_set": cfg.build_time is not None or buildtime.is_set(),
        "preset": preset,
        "settings": to_dict(cfg),
        "steps": [r.to_dict() for r in steps.records],
        "sets": {name: {**s, "weight": weights.get(name)} for name, s in sets.items()},
        "mixture": mixture,
    }
    waiting = [r for r in steps.records if r.status == "waiting"]
    if waiting:
        record["waiting"] = waiting[0].result["message"]
    atomic_write_text(out / RECORD_FILE, json.dumps(record, indent=2, ensure_ascii=False, default=str))
    return record


@flow(name="build")
def build_flow(output: str, config: dict | None = None, preset: str | None = None) -> dict:
    """`preset` then `config` on top (as `yume-data build --preset P --config FILE`), so a deployment's parameters
    mean what the command's options do."""
    return run_build(output, build_config(preset, config), preset)


def run_build_flow(output: str | Path, cfg: BuildConfig, preset: str | None = None) -> dict:
    return build_flow(str(output), to_dict(cfg), preset)
