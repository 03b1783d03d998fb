"""`t2v_synthetic`: captions in, Wan text-to-video, VBench quality, the top N kept, as a T2V set.

Steps: prompt selection (near-duplicate removal and seeded sampling of an OpenVid-1M-format CSV), synthesis (the
synthesize flow), scoring and the top-N cut (the filter flow), then the set's shards from the kept videos. Yume-1.5's
synthetic set: 80,000 OpenVid-1M captions, Wan 2.1 T2V 14B at 720p, VBench top 50,000.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelines.build_graph import Step
from pipelines.recipes.base import BuildContext, BuildSet, Recipe, Section, require, shards_step
from pipelines.recipes.sekai import outcome_settings
from yume_core.config import to_dict


@dataclass(frozen=True)
class SyntheticInputs:
    csv: str | None = None  # OpenVid-1M-format captions
    generate: bool = False  # the demo's generated captions instead


def synthesis_section(default_preset: str | None = None) -> Section:
    from pipelines.synthesis import SynthFlowConfig, synth_preset_settings

    return Section(SynthFlowConfig, synth_preset_settings, default_preset or "wan21-t2v-720p")


def shards_section() -> Section:
    import shards

    return Section(shards.ShardConfig)


def synth_settings(config) -> dict:
    """What changes the videos (not where or how fast they are made)."""
    from synthesis.generate import fingerprint_settings

    return fingerprint_settings(config.synth)


class T2VSynthetic(Recipe):
    name = "t2v_synthetic"
    kind = "synthetic"
    inputs = SyntheticInputs
    tasks = ("t2v",)
    card = {
        "source": "OpenVid-1M captions (Hub dataset nkp37/OpenVid-1M) rendered by Wan 2.1 text-to-video",
        "url": "https://huggingface.co/datasets/nkp37/OpenVid-1M",
        "licence": "captions: CC-BY-4.0 (OpenVid-1M); videos: outputs of Wan 2.1 (weights under Apache-2.0; the Wan "
                   "licence claims no rights over generated content and restricts harmful uses)",
        "made": "caption dedup and sampling -> Wan 2.1 T2V -> VBench quality score -> top N kept",
    }

    @property
    def sections(self):
        from filtering.presets import load_preset
        from pipelines.filtering import FilterFlowConfig
        from synthesis import SelectConfig

        return {"prompts": Section(SelectConfig), "synthesis": synthesis_section(),
                "filter": Section(FilterFlowConfig, load_preset), "shards": shards_section()}

    def resolved_inputs(self, s: BuildSet, ctx: BuildContext) -> SyntheticInputs:
        if s.inputs.generate:
            return replace(s.inputs, csv=ctx.generated["openvid_csv"])
        require(s.inputs, s.name, "csv")
        return s.inputs

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        from pipelines.filtering import run_filter_flow
        from pipelines.synthesis import run_synthesis_flow
        from synthesis import select_prompts_csv

        layout, csv, cfg = ctx.layout, self.resolved_inputs(s, ctx).csv, s.sections
        work = layout.work(s.name)
        prompts, rows = work / "prompts.parquet", work / "prompts.rows.parquet"
        videos, filtered = work / "videos", work / "filtered"
        name = s.name

        def select() -> dict:
            report = select_prompts_csv(csv, prompts, cfg["prompts"])
            return {"selected": report.get("selected") if isinstance(report, dict) else None}

        def synthesize() -> dict:
            run_synthesis_flow(str(prompts), str(videos), cfg["synthesis"])
            return {}

        def score() -> dict:
            run_filter_flow(str(videos / "manifest.parquet"), str(filtered), cfg["filter"])
            return {}

        return [
            # every input row's verdict (selected, duplicate, not sampled, ...) sits beside the selection
            Step(f"{name}/prompts", select, name, files=(csv,), settings=to_dict(cfg["prompts"]),
                 outputs={"prompts": prompts, "manifest": rows}, manifest=rows),
            Step(f"{name}/synthesis", synthesize, name, reads=(f"{name}/prompts",),
                 settings=synth_settings(cfg["synthesis"]), gpu=True,
                 outputs={"manifest": videos / "manifest.parquet", "summary": videos / "summary.json"},
                 manifest=videos / "manifest.parquet"),
            Step(f"{name}/filter", score, name, reads=(f"{name}/synthesis",),
                 settings=outcome_settings(cfg["filter"]), gpu=True,
                 outputs={"manifest": filtered / "manifest.parquet", "summary": filtered / "summary.json"},
                 manifest=filtered / "manifest.parquet", counts_from=f"{name}/synthesis", extends=True),
            shards_step(s, ctx, f"{name}/filter", filtered / "manifest.parquet"),
        ]

    def record(self, s: BuildSet, ctx: BuildContext) -> dict:
        filtered = ctx.layout.work(s.name, "filtered")
        return {"quality": {"manifest": ctx.layout.rel(filtered / "manifest.parquet"),
                            "summary": ctx.layout.rel(filtered / "summary.json")}}
