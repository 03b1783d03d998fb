"""`sekai`: any Sekai-format split (a CSV, its mp4 clips and camera files) as a set with action labels.

One step, the real-world flow: probe the clips, turn each trajectory into keyboard and mouse labels, caption the
clips when a captioner is configured, and write the set's shards (then its Energon metadata). Yume-1.5's real-world
set is Sekai-Real-HQ; Real-Walking, Real-Drone and the game splits take the same recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelines.build_graph import Step
from pipelines.recipes.base import BuildContext, BuildSet, Recipe, Section, require
from yume_core.config import to_dict


@dataclass(frozen=True)
class SekaiInputs:
    csv: str | None = None  # the annotation CSV (videoFile, cameraFile, caption, ...)
    videos: str | None = None  # folder of the mp4 clips
    trajectories: str | None = None  # folder of the camera .npz files
    generate: bool = False  # the demo's generated Sekai-format clips instead


def _real_world_section() -> Section:
    from pipelines.real_world import RealWorldConfig, load_real_world_preset

    return Section(RealWorldConfig, load_real_world_preset)


class Sekai(Recipe):
    name = "sekai"
    kind = "real_world"
    inputs = SekaiInputs
    tasks = ("t2v", "i2v")
    card = {
        "source": "Sekai walking clips with camera trajectories (Sekai, Hub dataset Lixsp11/Sekai-Project)",
        "url": "https://huggingface.co/datasets/Lixsp11/Sekai-Project",
        "licence": "the terms of the Sekai-Project dataset card; the clips are YouTube videos whose rights stay with "
                   "their owners",
        "made": "camera trajectories -> discrete keyboard and mouse actions; Sekai's scene captions train T2V, event "
                "captions written by a vision-language model train I2V",
    }

    @property
    def sections(self):
        return {"real_world": _real_world_section()}

    def resolved_inputs(self, s: BuildSet, ctx: BuildContext) -> SekaiInputs:
        if s.inputs.generate:
            g = ctx.generated
            return replace(s.inputs, csv=g["sekai_csv"], videos=g["videos"], trajectories=g["trajectories"])
        require(s.inputs, s.name, "csv", "videos", "trajectories")
        return s.inputs

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        import shards
        from pipelines.real_world import run_flow

        layout, inputs, config = ctx.layout, self.resolved_inputs(s, ctx), s.sections["real_world"]
        work, set_dir = layout.work(s.name), layout.set_dir(s.name)

        def run() -> dict:
            run_flow(inputs.csv, inputs.videos, inputs.trajectories, str(work), config, shards_dir=str(set_dir),
                     set_name=s.name, tasks=s.tasks, roots=ctx.roots)
            shards.prepare_energon(set_dir, s.name)
            return {}

        return [Step(f"{s.name}/real_world", run, s.name, files=(inputs.csv, inputs.videos, inputs.trajectories),
                     settings=[outcome_settings(config), list(s.tasks)], gpu=config.caption is not None,
                     outputs={"manifest": work / "manifest.parquet", "summary": work / "summary.json",
                              "set": set_dir},
                     manifest=work / "manifest.parquet")]

    def record(self, s: BuildSet, ctx: BuildContext) -> dict:
        return {"labels": {"mode": s.sections["real_world"].actions.mode,
                           "summary": ctx.layout.rel(ctx.layout.work(s.name, "summary.json"))}}


def outcome_settings(config) -> dict:
    """A stage's settings less its runner: the same outputs come from threads, processes or a Ray cluster."""
    settings = to_dict(config)
    settings.pop("runner")
    return settings
