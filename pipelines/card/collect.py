"""The card dict (what card.json holds) of a finished build folder and its record, and the extras the renderings
need besides it.

Where the numbers come from, so that they agree with what a trainer reads:
  - per set: `shards.set_stats` (index.parquet and tar sizes), then one pass over the set's tars (`scan_set`);
  - per stage: each step's manifest, whose status column says what every row became (rules of the house: counts
    in = counts out); a stage that extends an earlier manifest is credited only with the verdicts it added;
  - the mixture: `mixture.yaml` and a seeded simulation of the sampler the trainer uses (realised shares).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.card.features import features
from pipelines.card.scan import Thumb, scan_set
from pipelines.card.stats import HIST_BINS, describe, distribution
from yume_core.actions import KEY_LABELS, MOUSE_LABELS
from yume_core.manifest import FAILED, OK
from yume_core.samples import SCHEMA_VERSION, TASKS

CARD_VERSION = 2  # 2: a section per set of the build (its recipe, source, quality cut or screening)
MIX_STEPS = 10_000  # simulated trainer steps for the realised mixture shares


@dataclass
class Extras:
    """What the renderings need besides the card dict: too big (frames) or too Hub-specific (features) for it."""

    features: dict[str, list[dict]] = field(default_factory=dict)
    thumbs: dict[str, list[Thumb]] = field(default_factory=dict)


def collect(out: str | Path, record: dict) -> tuple[dict, Extras]:
    """The card dict (what card.json holds) and the extras of a finished build folder and its record."""
    out = Path(out)
    extras = Extras()
    sets = {name: _set_section(out, name, info, extras) for name, info in record.get("sets", {}).items()}
    card = {
        "card_version": CARD_VERSION,
        "sample_schema_version": SCHEMA_VERSION,
        "title": f"Yume-1.5-style world-model training data ({record.get('preset') or 'custom'} build)",
        "build": {"build_time": record.get("build_time"), "build_time_set": record.get("build_time_set"),
                  "preset": record.get("preset"), "mixture": record.get("mixture")},
        "sets": sets,
        "funnel": funnel(out, record),
        "mixture": _mixture(out, record),
        "stages": _stages(record),
        "settings": record.get("settings"),
    }
    card["warnings"] = _warnings(card)
    return card, extras


def _set_section(out: Path, name: str, info: dict, extras: Extras) -> dict:
    """A set's section: what its recipe is and where its data comes from, its figures, and what its recipe adds
    (the quality cut of a VBench-filtered set, the screening of a screened one, a note on the tasks it trains)."""
    section = {"recipe": info.get("recipe"), "kind": info.get("kind"), **_set_figures(out, name, info, extras),
               "source": info.get("source") or {}}
    if info.get("quality"):
        section["quality"] = _quality(out, info["quality"])
    if info.get("screening"):
        section["screening"] = _screening(out, info["screening"])
    if info.get("text_review"):
        section["text_review"] = _text_review(out, info["text_review"])
    if info.get("kind") == "event":
        section["tasks_note"] = EVENT_TASKS_NOTE
    if info.get("labels"):  # how the actions were labelled, and what the trajectory checks found
        labels = info["labels"]
        section["labels"] = {"mode": labels["mode"],
                             "trajectory_flags": _read_json(out / labels["summary"]).get("trajectory_flags")}
    return section


EVENT_TASKS_NOTE = ("Yume-1.5 says both that the event set is \"used exclusively for T2V\" and that the real-world "
                    "and event sets are \"used for both T2V and I2V\"; which one a build follows is a setting (the "
                    "set's `tasks`), not a fact of the data.")


def _set_figures(out: Path, name: str, info: dict, extras: Extras) -> dict:
    import shards  # here, as in pipelines.build: it imports webdataset and torch, which a build has loaded anyway

    set_dir = out / info.get("path", name)
    stats = shards.set_stats(set_dir) if (set_dir / "index.parquet").is_file() else \
        {"samples": 0, "failed": 0, "shards": 0, "bytes": 0, "hours": 0.0, "tasks": {}}
    scan = scan_set(set_dir)
    extras.features[name] = features(scan)
    extras.thumbs[name] = scan.thumbs
    trained = [t for t in TASKS if t in info.get("tasks", [])]
    return {
        "path": info.get("path", name),
        "data_files": f"{info.get('path', name)}/*.tar",
        "tasks": trained,
        "weight": info.get("weight"),
        "samples": stats["samples"],
        "failed": stats["failed"],
        "shards": stats["shards"],
        "bytes": stats["bytes"],
        "hours": stats["hours"],
        "samples_per_task": stats["tasks"],
        "clip_seconds": distribution(scan.seconds),
        "frames": describe(scan.frames),
        "fps": describe(scan.fps),
        "resolution": dict(sorted(scan.resolution.items())),
        "actions": _actions(scan.pairs),
        "caption_words": {t: distribution(scan.words[t]) for t in trained},
        "models": {kind: dict(sorted(c.items())) for kind, c in scan.models.items() if c},
        "frames_shown": [t.key for t in scan.thumbs],
    }


def _actions(pairs: np.ndarray) -> dict | None:
    """The keys x mouse grid of labelled frame steps (None: the set has no action labels)."""
    if not pairs.sum():
        return None
    return {"steps": int(pairs.sum()), "keys": list(KEY_LABELS), "mouse": list(MOUSE_LABELS),
            "pairs": pairs.tolist()}


# ------------------------------------------------------------------------------------------------- the funnel


def _verdicts(path: Path) -> tuple[int, int, Counter]:
    """Rows, ok rows and (status, reason) counts of the rows that are not ok."""
    table = pq.read_table(path, columns=["status", "reason"])
    status, reason = table["status"].to_pylist(), table["reason"].to_pylist()
    bad = Counter((s, r or "(none)") for s, r in zip(status, reason) if s != OK)
    return table.num_rows, status.count(OK), bad


def funnel(out: str | Path, record: dict) -> list[dict]:
    """In / ok / dropped / failed (by reason) of every step that decides about rows, in build order, as the steps
    declared it (`pipelines.build_graph.Step`): its manifest of verdicts, the step whose ok rows reached it, and
    whether it extends that step's manifest (then it is credited only with the verdicts it added). Every stage
    satisfies in == ok + dropped + failed unless a row went missing."""
    out = Path(out)
    manifests, stages = {}, []
    for step in record.get("steps", []):
        how = step.get("funnel")
        if not how or not (out / how["manifest"]).is_file():
            continue
        path = manifests[step["name"]] = out / how["manifest"]
        rows, ok, bad = _verdicts(path)
        before = manifests.get(how.get("counts_from"))
        if before is not None:  # what reached this step: the rows that were ok before it
            _, rows, earlier = _verdicts(before)
            if how.get("extends"):
                bad -= earlier
        stages.append(_stage_row(step["name"], step.get("set"), rows, ok, bad))
    return stages


def _stage_row(name: str, set_name: str | None, rows: int, ok: int, bad: Counter) -> dict:
    reasons = sorted(bad.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1]))
    return {"step": name, "set": set_name or "all", "in": rows, "ok": ok,
            "dropped": sum(c for (s, _), c in bad.items() if s != FAILED),
            "failed": sum(c for (s, _), c in bad.items() if s == FAILED),
            "by_reason": [{"status": s, "reason": r, "count": c} for (s, r), c in reasons]}


# ------------------------------------------------------------------------------- quality, screening, mixture


def _quality(out: Path, info: dict) -> dict | None:
    """A filtered set's VBench quality scores, the kept ones and the top-N cut (`info`: its filter manifest and
    summary; None: not there)."""
    from filtering.topk import QUALITY, RANK

    if not (out / info["manifest"]).is_file():
        return None
    table = pq.read_table(out / info["manifest"])
    summary = _read_json(out / info["summary"]).get("filtering", {}) if info.get("summary") else {}
    ranked = table.filter(pc.is_valid(table[RANK])) if {QUALITY, RANK} <= set(table.column_names) else None
    if ranked is None or not ranked.num_rows:
        return {"backend": summary.get("backend"), "scored": 0, "kept": 0, "limit": summary.get("limit"),
                "cut_score": None, "scores": describe([]), "kept_scores": describe([]), "histogram": None,
                "dimensions": {}}
    scores = ranked[QUALITY].to_numpy(zero_copy_only=False).astype(np.float64)
    kept = pc.equal(ranked["status"], OK).to_numpy(zero_copy_only=False)
    counts, edges = np.histogram(scores, bins=HIST_BINS)
    dims = [c for c in table.column_names if c.startswith("vbench_")]
    return {
        "backend": summary.get("backend"),
        "scored": int(scores.size),
        "kept": int(kept.sum()),
        "limit": summary.get("limit"),
        "cut_score": float(scores[kept].min()) if kept.any() else None,
        "scores": describe(scores),
        "kept_scores": describe(scores[kept]),
        "histogram": {"edges": edges.tolist(), "scored": counts.tolist(),
                      "kept": np.histogram(scores[kept], bins=edges)[0].tolist()},
        "dimensions": {c.removeprefix("vbench_"): describe(ranked[c].to_numpy(zero_copy_only=False)) for c in dims},
    }


def _screening(out: Path, info: dict) -> dict | None:
    """Kept / rejected / not reviewed of a screened set, and whether a person looked at all (the policy)."""
    from filtering import review_counts

    if not (out / info["manifest"]).is_file():
        return None
    policy = info.get("policy")
    table = pq.read_table(out / info["manifest"])
    counts = review_counts(table)
    by_person = policy == "decisions"  # any other policy keeps videos nobody looked at
    return {"policy": policy, "screened_by_a_person": by_person,
            "accept_rate": counts["keep_rate"] if by_person else None, **counts,
            "prescreen": prescreen_prediction(table)}


def _text_review(out: Path, info: dict) -> dict | None:
    """Drafted events of the set: how many were drafted, and kept / rejected / edited in the text review."""
    from filtering import review_counts

    if not (out / info["manifest"]).is_file():
        return None
    table = pq.read_table(out / info["manifest"])
    counts = review_counts(table)
    drafted = _verdicts(out / info["drafted"]) if (out / info["drafted"]).is_file() else None
    edited = int(pc.sum(pc.is_valid(table["edited_text"]).cast("int64")).as_py() or 0) \
        if "edited_text" in table.column_names else 0
    return {"policy": info.get("policy"), "reviewed_by_a_person": info.get("policy") == "decisions",
            "drafted_rows": drafted[0] if drafted else None, "drafted_ok": drafted[1] if drafted else None,
            "edited": edited, **counts}


def prescreen_prediction(table) -> dict | None:
    """How well the pre-screen predicted the people's decisions: the score distribution of kept and rejected
    videos, and the share of the rejections that fall in the bottom third of the screened videos by score (a
    score that knows nothing puts a third there; one that predicts, more). None without pre-screen scores; the
    prediction part is None until people decided (an accept_all build has nothing to compare with)."""
    from filtering.prescreen import SCORE

    if SCORE not in table.column_names:
        return None
    score = table[SCORE].to_numpy(zero_copy_only=False).astype(np.float64)
    reason = np.asarray(table["reason"].to_pylist(), dtype=object)
    review = np.asarray(table["review"].to_pylist(), dtype=object) if "review" in table.column_names else \
        np.full(table.num_rows, None, dtype=object)
    ok = np.asarray(table["status"].to_pylist(), dtype=object) == OK
    scored = np.isfinite(score)
    kept = scored & ok & (review == "keep")
    rejected = scored & (reason == "rejected_in_review")
    out = {"scored": int(scored.sum()), "scores": describe(score[scored]),
           "auto_rejected": int((reason == "prescreen_rejected").sum()),
           "kept": describe(score[kept]), "rejected": describe(score[rejected]), "prediction": None}
    screened = np.flatnonzero(kept | rejected)
    if not rejected.any() or not kept.any():
        return out
    order = screened[np.argsort(score[screened], kind="stable")]
    bottom = order[: -(-len(order) // 3)]  # the lowest third (rounded up) of the screened videos
    counts, edges = np.histogram(score[screened], bins=HIST_BINS)
    out["prediction"] = {
        "screened": int(len(screened)),
        "bottom_third_below": float(score[order[len(bottom)]]) if len(bottom) < len(order) else None,
        "rejections_in_bottom_third": round(float(rejected[bottom].sum() / rejected.sum()), 4),
        "histogram": {"edges": edges.tolist(), "kept": np.histogram(score[kept], bins=edges)[0].tolist(),
                      "rejected": np.histogram(score[rejected], bins=edges)[0].tolist()},
    }
    return out


def _mixture(out: Path, record: dict) -> dict | None:
    """Requested weight shares against those a seeded simulation of the trainer's sampler draws, per set and, with
    the per-task weights it draws by, per task."""
    from yume_core.mixture import MixtureSampler, default_schedule, read_mixture

    if not record.get("mixture") or not (out / record["mixture"]).is_file():
        return None
    sources = read_mixture(out / record["mixture"])
    schedule = default_schedule(sources)
    sim = MixtureSampler(sources, schedule=schedule).simulate(MIX_STEPS)
    per_task = "; ".join(f"{t}: " + ", ".join(f"{n} {w:.3f}" for n, w in ws.items())
                         for t, ws in sim["task_weights"].items())
    return {"file": record["mixture"], "schedule": list(schedule), "simulated_steps": MIX_STEPS,
            "requested": sim["requested"], "realized": sim["realized"], "tasks": sim["tasks"],
            "sets_by_task": sim["sets_by_task"], "task_weights": sim["task_weights"],
            "realized_by_task": sim["realized_by_task"],
            "note": "a weight is the set's share of the samples: the trainer alternates the tasks of the schedule "
                    "and draws each task's samples with per-task weights solved so that every set gets its share "
                    f"from the tasks it trains ({per_task})"}


def _stages(record: dict) -> dict:
    # Not the step's status: done now or skipped as done before is how this run went, not what the data is, and a
    # rerun that skips every step then writes the same card.
    steps = [{"name": s["name"], "seconds": s.get("seconds", 0.0), "device": s.get("device"),
              "gpu_hours": s.get("gpu_hours")} for s in record.get("steps", [])]
    gpu = [s["gpu_hours"] for s in steps if s["gpu_hours"] is not None]
    return {"steps": steps, "seconds": round(sum(s["seconds"] for s in steps), 2),
            "gpu_hours": round(sum(gpu), 4) if gpu else None,
            "note": "seconds of the run that did each step's work (a rerun that skips a step keeps its time)"}


def _warnings(card: dict) -> list[str]:
    """What a reader must not miss, first on every rendering."""
    notes = []
    for name, s in card["sets"].items():
        screening = s.get("screening")
        if screening and not screening["screened_by_a_person"]:
            notes.append(f"The {name} set was NOT screened by a person (screening policy {screening['policy']}): "
                         f"{screening['ok']} of {screening['rows']} generated videos went into it unseen.")
        texts = s.get("text_review")
        if texts and not texts["reviewed_by_a_person"]:
            notes.append(f"The {name} set's events were drafted by a model and NOT reviewed by a person (text review "
                         f"policy {texts['policy']}).")
        if not s["samples"]:
            notes.append(f"The {name} set has no samples.")
        if "quality" in s and (s["quality"] is None or not s["quality"]["scored"]):
            notes.append(f"The {name} set has no VBench quality scores: nothing was ranked.")
    return notes


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
