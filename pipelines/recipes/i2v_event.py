"""`i2v_event`: start images and written events in, Wan image-to-video, review pages, screening, as a set.

Steps: start frames cut from Sekai clips (when no event file is given: the demo pairs them with one written event
per category), synthesis (the synthesize flow with an I2V model), review pages, screening (a person's decisions,
or the `accept_all` policy), then the set's shards. Manual screening is a real pause: with the `decisions` policy
and no decisions file, the screening step waits, the build stops after the review pages, says what to open and how
to resume, and exits 3. Yume-1.5's event set: 10,000 first-person images and written events in four categories,
Wan 2.2 I2V A14B, about 4,000 kept by people.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from pipelines.build_graph import Step
from pipelines.recipes.base import BuildContext, BuildSet, Recipe, Section
from pipelines.recipes.t2v_synthetic import shards_section, synth_settings, synthesis_section
from yume_core.config import ConfigError, to_dict
from yume_core.errors import InputError


@dataclass(frozen=True)
class EventInputs:
    events: str | None = None  # an event set: JSON Lines or CSV with event_id, category, description, image
    csv: str | None = None  # without `events`: Sekai clips to cut start frames from (paired with the demo's events)
    videos: str | None = None
    generate: bool = False  # start frames from the demo's generated Sekai clips


@dataclass(frozen=True)
class ScreeningConfig:
    policy: str = "decisions"  # decisions: wait for a decisions file | accept_all: keep every video, unscreened
    decisions: str | None = None  # key,decision,note CSV (or JSONL) exported by the review pages
    unreviewed: str = "drop"  # what happens to videos the decisions file does not name

    def __post_init__(self):
        if self.policy not in ("decisions", "accept_all"):
            raise ConfigError(f"screening.policy must be decisions or accept_all, got {self.policy!r}")


@dataclass(frozen=True)
class ReviewConfig:
    page_size: int = 200  # videos per review page


class I2VEvent(Recipe):
    name = "i2v_event"
    kind = "event"
    inputs = EventInputs
    tasks = ("t2v", "i2v")
    waits_for_people = True
    card = {
        "source": "first-person start images and written event descriptions (urban daily life, sci-fi, fantasy, "
                  "weather) rendered by Wan 2.2 image-to-video",
        "url": "https://huggingface.co/Wan-AI",
        "licence": "images and texts: as supplied to the build (start frames cut from Sekai clips follow Sekai's "
                   "terms); videos: outputs of Wan 2.2 (weights under Apache-2.0, as above)",
        "made": "Wan 2.2 I2V -> manual screening",
    }

    @property
    def sections(self):
        from synthesis import EventImageConfig

        return {"event_images": Section(EventImageConfig), "synthesis": synthesis_section("wan22-i2v-720p"),
                "review": Section(ReviewConfig), "screening": Section(ScreeningConfig), "shards": shards_section()}

    def resolved_inputs(self, s: BuildSet, ctx: BuildContext) -> EventInputs:
        if s.inputs.generate:
            return replace(s.inputs, csv=ctx.generated["sekai_csv"], videos=ctx.generated["videos"])
        if not s.inputs.events and not (s.inputs.csv and s.inputs.videos):
            raise ConfigError(f"sets.{s.name}.inputs: give events (an event set file), or csv and videos to cut "
                              "start frames from (or generate: true for the demo's)")
        return s.inputs

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        from pipelines.build_inputs import write_demo_events
        from synthesis import event_images

        layout, inputs, cfg, name = ctx.layout, self.resolved_inputs(s, ctx), s.sections, s.name
        work = layout.work(name)
        images = work / "images"
        steps = []
        if inputs.events:
            events, source = inputs.events, {"files": (inputs.events,)}
        else:  # start frames cut from Sekai clips, paired with the demo's written events
            events = str(work / "events.jsonl")

            def cut() -> dict:
                event_images(inputs.csv, inputs.videos, images, cfg["event_images"])
                write_demo_events(images / "manifest.parquet", work / "events.jsonl")
                return {}

            steps.append(Step(f"{name}/event_images", cut, name, files=(inputs.csv, inputs.videos),
                              settings=to_dict(cfg["event_images"]),
                              outputs={"events": work / "events.jsonl", "summary": images / "summary.json"}))
            source = {"reads": (f"{name}/event_images",)}
        steps += self._video_steps(s, ctx, events, source)
        return steps

    def _video_steps(self, s: BuildSet, ctx: BuildContext, events: str, source: dict) -> list[Step]:
        import shards
        from filtering import apply_review, make_review, review_counts
        from filtering.review import read_decisions
        from pipelines.build_graph import files_digest
        from pipelines.filtering import relocated
        from pipelines.reporting import report
        from pipelines.synthesis import run_synthesis_flow
        from yume_core.manifest import read_manifest, write_manifest

        layout, cfg, name = ctx.layout, s.sections, s.name
        work = layout.work(name)
        videos, review, screened, set_dir = work / "videos", work / "review", work / "screened", layout.set_dir(name)
        manifest, screening = videos / "manifest.parquet", cfg["screening"]

        def synthesize() -> dict:
            run_synthesis_flow(events, str(videos), cfg["synthesis"])
            return {}

        def pages() -> dict:
            make_review(read_manifest(manifest), videos, review, title=f"{name} set", **to_dict(cfg["review"]))
            return {}

        def waits() -> dict | None:
            if screening.policy != "decisions" or screening.decisions:
                return None
            index = review / "index.html"
            return {"pages": layout.rel(index), "message": (
                f"the {name} set waits for manual screening: open {index} in a browser, keep (y) or reject (n) each "
                "video, press \"Download decisions\", then resume with the same command plus --decisions <the "
                "downloaded CSV> (or --accept-all to keep every video unscreened)")}

        def screen() -> dict:
            table = read_manifest(manifest)
            if screening.policy == "accept_all":
                ok = [r["prompt_id"] for r in table.select(["prompt_id", "status"]).to_pylist() if r["status"] == "ok"]
                decisions = {k: ("keep", "accept_all policy: not screened") for k in ok}
                origin = "the accept_all policy"
            else:
                decisions, origin = read_decisions(screening.decisions), str(screening.decisions)
            table = apply_review(table, decisions, unreviewed=screening.unreviewed, source=origin)
            table = relocated(table, videos, screened)
            write_manifest(table, screened / "manifest.parquet")
            report(table, screened, title="screening", seconds=0.0, extra=review_counts(table))
            return {}

        def write() -> dict:
            path = screened / "manifest.parquet"
            shards.write_set_shards(read_manifest(path), set_dir, name, cfg["shards"],
                                    provenance={"flow": "build", "set": name, "screening_policy": screening.policy},
                                    tasks=s.tasks, base_dir=path.parent, kind=self.kind, root=str(layout.out))
            return {}

        decisions = files_digest([screening.decisions]) if screening.decisions else None
        return [
            Step(f"{name}/synthesis", synthesize, name, reads=source.get("reads", ()), files=source.get("files", ()),
                 settings=synth_settings(cfg["synthesis"]), gpu=True,
                 outputs={"manifest": manifest, "summary": videos / "summary.json"}, manifest=manifest),
            Step(f"{name}/review_pages", pages, name, reads=(f"{name}/synthesis",), settings=to_dict(cfg["review"]),
                 outputs={"pages": review / "index.html"}),
            Step(f"{name}/screening", screen, name, reads=(f"{name}/synthesis", f"{name}/review_pages"),
                 settings=[to_dict(screening), decisions], waits=waits,
                 outputs={"manifest": screened / "manifest.parquet", "summary": screened / "summary.json"},
                 manifest=screened / "manifest.parquet", counts_from=f"{name}/synthesis", extends=True),
            Step(f"{name}/shards", write, name, reads=(f"{name}/screening",),
                 settings=[to_dict(cfg["shards"]), list(s.tasks)], outputs={"set": set_dir},
                 manifest=set_dir / shards.INDEX_FILE, counts_from=f"{name}/screening"),
        ]

    def record(self, s: BuildSet, ctx: BuildContext) -> dict:
        screened = ctx.layout.work(s.name, "screened", "manifest.parquet")
        screening = s.sections["screening"]
        return {"screening": {"policy": screening.policy, "decisions": screening.decisions,
                              "manifest": ctx.layout.rel(screened)}}

    def check_inputs(self, s: BuildSet, ctx: BuildContext) -> None:
        super().check_inputs(s, ctx)
        decisions = s.sections["screening"].decisions
        if decisions and not os.path.isfile(decisions):
            raise InputError(decisions, f"sets.{s.name}.screening.decisions does not exist",
                             "give the CSV the review pages downloaded")
