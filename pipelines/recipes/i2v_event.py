"""`i2v_event`: start images and written events in, Wan image-to-video, review pages, screening, as a set.

Steps: start frames cut from Sekai clips (when no event file is given: the demo pairs them with one written event
per category), synthesis (the synthesize flow with an I2V model), review pages, screening (a person's decisions,
or the `accept_all` policy), then the set's shards. Manual screening is a real pause: with the `decisions` policy
and no decisions file, the screening step waits, the build stops after the review pages, says what to open and how
to resume, and exits 3. Yume-1.5's event set: 10,000 first-person images and written events in four categories,
Wan 2.2 I2V A14B, about 4,000 kept by people.

Drafted events: with `inputs.images` (start images to draft from) or `draft: {enabled: true}` (on the frames cut
from clips), a VLM drafts the events (`pipelines.drafting`, the draft-events flow) and people review the texts
before any video is rendered: text review pages, then a `text_review` step that pauses like screening (its
`decisions`, or `accept_all`), and synthesis renders the reviewed texts. Text review costs seconds per event where
a rejected video costs GPU minutes, so the cheap filter goes first.
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
    images: str | None = None  # or start images to draft events from: an event-images manifest or a folder
    csv: str | None = None  # without `events`: Sekai clips to cut start frames from (paired with the demo's events)
    videos: str | None = None
    generate: bool = False  # start frames from the demo's generated Sekai clips


@dataclass(frozen=True)
class ScreeningConfig:
    policy: str = "decisions"  # decisions: wait for a decisions file | accept_all: keep every video, unscreened
    decisions: str | None = None  # key,decision,note CSV (or JSONL) exported by the review pages
    unreviewed: str = "drop"  # what happens to videos the decisions file does not name
    auto_reject_below: float | None = None  # with `prescreen`: videos scoring under this are dropped unseen

    def __post_init__(self):
        if self.policy not in ("decisions", "accept_all"):
            raise ConfigError(f"screening.policy must be decisions or accept_all, got {self.policy!r}")


@dataclass(frozen=True)
class TextReviewConfig:
    """The review of drafted event texts before synthesis: the same policies as screening."""

    policy: str = "decisions"  # decisions: wait for a decisions file | accept_all: keep every text, unread
    decisions: str | None = None  # key,decision,note,text CSV (or JSONL) exported by the text review pages
    unreviewed: str = "drop"  # what happens to events the decisions file does not name

    def __post_init__(self):
        if self.policy not in ("decisions", "accept_all"):
            raise ConfigError(f"text_review.policy must be decisions or accept_all, got {self.policy!r}")


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
        from pipelines.drafting import EventDraftConfig  # here: they import the captioning and filtering stages
        from pipelines.prescreen import EventPrescreenConfig
        from synthesis import EventImageConfig

        return {"event_images": Section(EventImageConfig), "draft": Section(EventDraftConfig),
                "text_review": Section(TextReviewConfig), "synthesis": synthesis_section("wan22-i2v-720p"),
                "prescreen": Section(EventPrescreenConfig), "review": Section(ReviewConfig),
                "screening": Section(ScreeningConfig), "shards": shards_section()}

    def resolved_inputs(self, s: BuildSet, ctx: BuildContext) -> EventInputs:
        if s.inputs.generate:
            return replace(s.inputs, csv=ctx.generated["sekai_csv"], videos=ctx.generated["videos"])
        if s.inputs.events and (s.inputs.images or s.sections["draft"].enabled):
            raise ConfigError(f"sets.{s.name}: an events file is written already; drafting needs start images "
                              "(inputs.images, or csv and videos to cut them from), not events")
        if s.sections["screening"].auto_reject_below is not None and not s.sections["prescreen"].enabled:
            raise ConfigError(f"sets.{s.name}.screening.auto_reject_below needs a score: enable the pre-screen "
                              f"(sets.{s.name}.prescreen.enabled: true)")
        if not s.inputs.events and not s.inputs.images and not (s.inputs.csv and s.inputs.videos):
            raise ConfigError(f"sets.{s.name}.inputs: give events (an event set file), images (start images to draft "
                              "events from), or csv and videos to cut start frames from (or generate: true for the "
                              "demo's)")
        return s.inputs

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        from pipelines.build_inputs import write_demo_events
        from synthesis import event_images

        layout, inputs, cfg, name = ctx.layout, self.resolved_inputs(s, ctx), s.sections, s.name
        work = layout.work(name)
        images = work / "images"
        drafting = bool(inputs.images) or cfg["draft"].enabled
        steps = []
        if inputs.events:
            events, source = inputs.events, {"files": (inputs.events,)}
        elif inputs.images:
            steps += self._draft_steps(s, ctx, inputs.images, {"files": (inputs.images,)})
            events = str(work / "reviewed" / "events.jsonl")
            source = {"reads": (f"{name}/text_review",), "counts_from": f"{name}/text_review"}
        else:  # start frames cut from Sekai clips, paired with the demo's written events or drafted
            events = str(work / "events.jsonl")

            def cut() -> dict:
                event_images(inputs.csv, inputs.videos, images, cfg["event_images"])
                if not drafting:
                    write_demo_events(images / "manifest.parquet", work / "events.jsonl")
                return {}

            outputs = {"images": images / "manifest.parquet", "summary": images / "summary.json"}
            if not drafting:
                outputs["events"] = work / "events.jsonl"
            steps.append(Step(f"{name}/event_images", cut, name, files=(inputs.csv, inputs.videos),
                              settings=[to_dict(cfg["event_images"]), drafting], outputs=outputs))
            source = {"reads": (f"{name}/event_images",)}
            if drafting:
                steps += self._draft_steps(s, ctx, str(images / "manifest.parquet"), source)
                events = str(work / "reviewed" / "events.jsonl")
                source = {"reads": (f"{name}/text_review",), "counts_from": f"{name}/text_review"}
        steps += self._video_steps(s, ctx, events, source)
        return steps

    def _draft_steps(self, s: BuildSet, ctx: BuildContext, images: str, source: dict) -> list[Step]:
        """Draft the events (the draft-events flow), write text review pages, then wait for (or apply) the text
        decisions: the reviewed event set is what synthesis renders."""
        from filtering.review import read_decisions, read_text_edits
        from pipelines.build_graph import files_digest
        from pipelines.drafting import run_draft_events_flow
        from pipelines.event_review import apply_event_review, make_event_review
        from pipelines.people import received_before, wait_for_decisions
        from synthesis.events import read_event_set

        layout, cfg, name = ctx.layout, s.sections, s.name
        work = layout.work(name)
        drafted, pages, reviewed = work / "draft", work / "text_review", work / "reviewed"
        flow_cfg = cfg["draft"].flow_config()
        received = work / "decisions" / "text_review.csv"  # what a run waiting in Prefect was given
        policy, given = received_before(cfg["text_review"].policy, cfg["text_review"].decisions, received)
        review = {"policy": policy, "decisions": given, "unreviewed": cfg["text_review"].unreviewed}

        def draft() -> dict:
            run_draft_events_flow(images, str(drafted), flow_cfg)
            return {}

        def text_pages() -> dict:
            make_event_review(drafted / "events.jsonl", pages, title=f"{name} set: event texts")
            return {}

        def waits() -> dict | None:
            if review["policy"] != "decisions" or review["decisions"]:
                return None
            index = pages / "index.html"
            message = (f"the {name} set waits for its event texts to be reviewed: open {index} in a browser, keep "
                       "(y), reject (n) or edit (e) each drafted event, press \"Download decisions\", then resume "
                       "with the same command plus --text-decisions <the downloaded CSV> (or --accept-all to keep "
                       "every text unread)")
            got = wait_for_decisions(f"{name}/text_review", message, received)
            if got is None:
                return {"pages": layout.rel(index), "message": message}
            review.update(policy="accept_all") if got == "accept_all" else review.update(decisions=got)
            return None

        def apply() -> dict:
            if review["policy"] == "accept_all":
                table = read_event_set(drafted / "events.jsonl")
                ok = [k for k, st in zip(table["prompt_id"].to_pylist(), table["status"].to_pylist()) if st == "ok"]
                decisions = {k: ("keep", "accept_all policy: not reviewed") for k in ok}
                edits, origin = {}, "the accept_all policy"
            else:
                decisions, edits = read_decisions(review["decisions"]), read_text_edits(review["decisions"])
                origin = str(review["decisions"])
            apply_event_review(drafted / "events.jsonl", decisions, edits, reviewed, unreviewed=review["unreviewed"],
                               source=origin)
            return {}

        from pipelines.drafting import draft_settings

        settings = {**{k: v for k, v in to_dict(flow_cfg).items() if k != "runner"}, "vlm": draft_settings(flow_cfg.vlm)}
        decisions = files_digest([review["decisions"]]) if review["decisions"] else None
        return [
            Step(f"{name}/draft", draft, name, reads=source.get("reads", ()), files=source.get("files", ()),
                 settings=settings, gpu=flow_cfg.vlm.backend != "openai",
                 outputs={"events": drafted / "events.jsonl", "manifest": drafted / "manifest.parquet",
                          "summary": drafted / "summary.json"}, manifest=drafted / "manifest.parquet"),
            Step(f"{name}/text_review_pages", text_pages, name, reads=(f"{name}/draft",),
                 outputs={"pages": pages / "index.html"}),
            Step(f"{name}/text_review", apply, name, reads=(f"{name}/draft", f"{name}/text_review_pages"),
                 settings=[dict(review), decisions], waits=waits,
                 outputs={"events": reviewed / "events.jsonl", "manifest": reviewed / "manifest.parquet",
                          "summary": reviewed / "summary.json"},
                 manifest=reviewed / "manifest.parquet", counts_from=f"{name}/draft"),
        ]

    def _video_steps(self, s: BuildSet, ctx: BuildContext, events: str, source: dict) -> list[Step]:
        import shards
        from filtering import apply_review, make_review, review_counts
        from filtering.review import read_decisions
        from pipelines.build_graph import files_digest
        from pipelines.filtering import relocated
        from pipelines.people import received_before, wait_for_decisions
        from pipelines.reporting import report
        from pipelines.synthesis import run_synthesis_flow
        from yume_core.manifest import read_manifest, write_manifest

        layout, cfg, name = ctx.layout, s.sections, s.name
        work = layout.work(name)
        videos, review, screened, set_dir = work / "videos", work / "review", work / "screened", layout.set_dir(name)
        manifest, prescreen = videos / "manifest.parquet", cfg["prescreen"]
        received = work / "decisions" / "screening.csv"  # what a run waiting in Prefect was given
        policy, given = received_before(cfg["screening"].policy, cfg["screening"].decisions, received)
        screening = replace(cfg["screening"], policy=policy, decisions=given)
        # what people screen: the synthesis manifest, or the pre-screened one (scored, sorted, auto-rejected)
        scored = work / "prescreen" / "manifest.parquet" if prescreen.enabled else manifest
        screens = f"{name}/prescreen" if prescreen.enabled else f"{name}/synthesis"

        def synthesize() -> dict:
            run_synthesis_flow(events, str(videos), cfg["synthesis"])
            return {}

        def score() -> dict:
            from pipelines.prescreen import run_prescreen

            run_prescreen(manifest, videos, scored.parent, prescreen, screening.auto_reject_below)
            return {}

        def pages() -> dict:
            make_review(read_manifest(scored), videos, review, title=f"{name} set", **to_dict(cfg["review"]))
            return {}

        def waits() -> dict | None:
            nonlocal screening
            if screening.policy != "decisions" or screening.decisions:
                return None
            index = review / "index.html"
            message = (f"the {name} set waits for manual screening: open {index} in a browser, keep (y) or reject "
                       "(n) each video, press \"Download decisions\", then resume with the same command plus "
                       "--decisions <the downloaded CSV> (or --accept-all to keep every video unscreened)")
            got = wait_for_decisions(f"{name}/screening", message, received)
            if got is None:
                return {"pages": layout.rel(index), "message": message}
            screening = replace(screening, policy="accept_all") if got == "accept_all" else \
                replace(screening, decisions=got)
            return None

        def screen() -> dict:
            table = read_manifest(scored)
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
                                    tasks=s.tasks, base_dir=path.parent, kind=self.kind, roots=ctx.roots)
            return {}

        decisions = files_digest([screening.decisions]) if screening.decisions else None
        steps = [
            Step(f"{name}/synthesis", synthesize, name, reads=source.get("reads", ()), files=source.get("files", ()),
                 settings=synth_settings(cfg["synthesis"]), gpu=True,
                 outputs={"manifest": manifest, "summary": videos / "summary.json"}, manifest=manifest,
                 counts_from=source.get("counts_from")),
        ]
        if prescreen.enabled:
            steps.append(Step(f"{name}/prescreen", score, name, reads=(f"{name}/synthesis",), gpu=True,
                              settings=[to_dict(prescreen), screening.auto_reject_below],
                              outputs={"manifest": scored, "summary": scored.parent / "summary.json"},
                              manifest=scored, counts_from=f"{name}/synthesis", extends=True))
        return steps + [
            Step(f"{name}/review_pages", pages, name, reads=(screens,), settings=to_dict(cfg["review"]),
                 outputs={"pages": review / "index.html"}),
            Step(f"{name}/screening", screen, name, reads=(screens, f"{name}/review_pages"),
                 settings=[to_dict(screening), decisions], waits=waits,
                 outputs={"manifest": screened / "manifest.parquet", "summary": screened / "summary.json"},
                 manifest=screened / "manifest.parquet", counts_from=screens, extends=True),
            Step(f"{name}/shards", write, name, reads=(f"{name}/screening",),
                 settings=[to_dict(cfg["shards"]), list(s.tasks)], outputs={"set": set_dir},
                 manifest=set_dir / shards.INDEX_FILE, counts_from=f"{name}/screening"),
        ]

    def record(self, s: BuildSet, ctx: BuildContext) -> dict:
        from pipelines.people import received_before

        work = ctx.layout.work(s.name)
        screening = s.sections["screening"]
        policy, decisions = received_before(screening.policy, screening.decisions, work / "decisions" / "screening.csv")
        out = {"screening": {"policy": policy, "decisions": decisions,
                             "manifest": ctx.layout.rel(work / "screened" / "manifest.parquet")}}
        if s.inputs.images or s.sections["draft"].enabled:
            review = s.sections["text_review"]
            policy, decisions = received_before(review.policy, review.decisions, work / "decisions" / "text_review.csv")
            out["text_review"] = {"policy": policy, "decisions": decisions,
                                  "drafted": ctx.layout.rel(work / "draft" / "manifest.parquet"),
                                  "manifest": ctx.layout.rel(work / "reviewed" / "manifest.parquet")}
        return out

    def check_inputs(self, s: BuildSet, ctx: BuildContext) -> None:
        super().check_inputs(s, ctx)
        for section in ("screening", "text_review"):
            decisions = s.sections[section].decisions
            if decisions and not os.path.isfile(decisions):
                raise InputError(decisions, f"sets.{s.name}.{section}.decisions does not exist",
                                 "give the CSV the review pages downloaded")
