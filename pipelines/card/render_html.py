"""card.html, for a person: one self-contained page (inline CSS, plots and sample frames as data URIs, no script,
nothing loaded from the network) that opens from disk, a mail attachment or a CI artifact alike."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from pipelines.card import figures as figs
from pipelines.card.collect import Extras
from pipelines.card.sentences import models_text, screening_sentence

TEMPLATE = Path(__file__).with_name("template.html")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
e = html.escape


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else e(str(value))


def _bytes(n: int) -> str:
    if n < 1000:
        return f"{n:,} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} TB"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are HTML already (the caller escapes text)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure(uri: str | None, alt: str, missing: str) -> str:
    return f'<img class="plot" alt="{e(alt)}" src="{uri}">' if uri else f'<p class="none">{e(missing)}</p>'


def _dist_row(label: str, d: dict, digits: int = 2) -> list[str]:
    sd = d["variance"] ** 0.5 if d["variance"] is not None else None
    return [e(label), _num(d["count"]), _num(d["mean"], digits), _num(sd, digits), _num(d["min"], digits),
            _num(d["max"], digits)]


DIST_HEADERS = ["", "count", "mean", "sd", "min", "max"]


def render_html(card: dict, extras: Extras) -> str:
    """The page for people: every section of the card with its plot and its numbers."""
    sections = [
        ("sets", "Sets", _html_sets(card)),
        *((f"set-{name}", f"Set {name} ({s['recipe']})", _html_set(name, s)) for name, s in card["sets"].items()),
        ("funnel", "Funnel", _html_funnel(card, figs.funnel(card["funnel"]))),
        ("clips", "Clips", _html_clips(card, figs.clips(card["sets"]))),
        ("actions", "Actions (keys x mouse)", _html_actions(card)),
        ("captions", "Training texts", _html_captions(card, figs.captions(card["sets"]))),
        ("mixture", "Mixture", _html_mixture(card, figs.mixture(card["mixture"]))),
        ("time", "Time per stage", _html_time(card, figs.stage_times(card["stages"]["steps"]))),
        ("frames", "Sample frames", _html_frames(extras)),
        ("sources", "Sources and licences", _html_sources(card)),
    ]
    nav = " ".join(f'<a href="#{k}">{e(t)}</a>' for k, t, _ in sections)
    build = card["build"]
    head = [f"<h1>{e(card['title'])}</h1>",
            f'<p class="meta">built {e(str(build["build_time"]))} &middot; preset {e(str(build["preset"]))} '
            f"&middot; card version {card['card_version']} &middot; sample schema {card['sample_schema_version']}"
            f"</p>", f"<nav>{nav}</nav>"]
    head += [f'<p class="warning">{e(w)}</p>' for w in card["warnings"]]
    body = "\n".join(head + [f'<section id="{k}"><h2>{e(t)}</h2>\n{b}\n</section>' for k, t, b in sections])
    fill = {"title": e(card["title"]), "body": body}
    return _PLACEHOLDER.sub(lambda m: fill[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))


def _html_sets(card: dict) -> str:
    rows = [[e(n), _num(s["samples"]), _num(s["failed"]), _num(s["shards"]), _bytes(s["bytes"]),
             _num(s["hours"]), e(", ".join(f"{t} {c}" for t, c in s["samples_per_task"].items()) or "-"),
             _num(s["weight"]), f"<code>{e(s['data_files'])}</code>"] for n, s in card["sets"].items()]
    return _table(["set", "samples", "failed", "shards", "size", "hours", "samples per task", "weight", "files"],
                  rows, "num")


def _html_set(name: str, s: dict) -> str:
    """One set: where it comes from, what it trains, and what its recipe decided (a quality cut, a screening)."""
    src = s["source"]
    page = (f"<p>{e(src.get('source', ''))}; made by {e(src.get('made', ''))}. Trains "
            f"<strong>{e(' and '.join(t.upper() for t in s['tasks']))}</strong> with weight {_num(s['weight'])}"
            f" (recipe <code>{e(str(s['recipe']))}</code>).</p>")
    if s.get("tasks_note"):
        page += f'<p class="setting">{e(s["tasks_note"])}</p>'
    if s.get("labels"):
        flags = s["labels"]["trajectory_flags"] or {}
        found = ", ".join(f"{f} {flags.get(f, 0):,}" for f in ("jitter", "jump", "frozen"))
        page += (f"<p>Actions labelled in the <code>{e(s['labels']['mode'])}</code> mode. Trajectory checks: "
                 f"{flags.get('flagged', 0):,} of {flags.get('checked', 0):,} clips flagged ({e(found)}).</p>")
    if "quality" in s:
        page += "<h3>VBench quality</h3>" + _html_quality(s["quality"], figs.quality(s["quality"]))
    if s.get("text_review"):
        page += "<h3>Drafted event texts</h3>" + _html_text_review(s["text_review"])
    if "screening" in s:
        page += "<h3>Screening</h3>" + _html_screening(s["screening"])
    return page


def _html_text_review(t: dict) -> str:
    who = "reviewed by a person" if t["reviewed_by_a_person"] else f"NOT reviewed by a person ({t['policy']} policy)"
    cls = "setting" if t["reviewed_by_a_person"] else "warning"
    return (f'<p class="{cls}">{_num(t["drafted_ok"])} events drafted by a model (of {_num(t["drafted_rows"])} '
            f"images x categories asked), {e(who)}: {t['kept']:,} kept, {t['rejected']:,} rejected, {t['not_reviewed']:,} "
            f"not reviewed, {t['edited']:,} texts edited.</p>")


def _html_funnel(card: dict, uri: str | None) -> str:
    rows = [[e(f["step"]), e(f["set"]), _num(f["in"]), _num(f["ok"]), _num(f["dropped"]), _num(f["failed"]),
             "<br>".join(f"{e(r['reason'])} <span class='{e(r['status'])}'>{e(r['status'])}</span> {r['count']:,}"
                         for r in f["by_reason"]) or "-"] for f in card["funnel"]]
    return _figure(uri, "rows per stage", "No stage recorded per-row verdicts.") + \
        _table(["stage", "set", "in", "ok", "dropped", "failed", "by reason"], rows, "num")


def _html_clips(card: dict, uri: str | None) -> str:
    rows = []
    for name, s in card["sets"].items():
        rows += [_dist_row(f"{name}: seconds", s["clip_seconds"]), _dist_row(f"{name}: frames", s["frames"], 1),
                 _dist_row(f"{name}: fps", s["fps"], 2)]
    res = [[e(n), e(", ".join(f"{r}: {c}" for r, c in s["resolution"].items()) or "-")]
           for n, s in card["sets"].items()]
    return _figure(uri, "clip length and resolution", "No set has samples.") + \
        _table(DIST_HEADERS, rows, "num") + _table(["set", "samples per width x height"], res)


def _html_actions(card: dict) -> str:
    parts = []
    for name, s in card["sets"].items():
        grid = s["actions"]
        if grid is None:
            parts.append(f"<h3>{e(name)}</h3><p class='none'>No action labels in this set.</p>")
            continue
        if s.get("labels"):
            name = f"{name} ({s['labels']['mode']} mode)"
        top = max(max(row) for row in grid["pairs"])
        header = "".join(f"<th>{e(m)}</th>" for m in grid["mouse"])
        body = "".join(
            f"<tr><th>{e(k)}</th>" + "".join(
                f'<td style="background: rgba(31,119,180,{c / top:.3f})">{c:,}</td>' for c in row) + "</tr>"
            for k, row in zip(grid["keys"], grid["pairs"]))
        parts.append(f"<h3>{e(name)}: {grid['steps']:,} labelled frame steps</h3>"
                     f'<table class="grid"><thead><tr><th>keys \\ mouse</th>{header}</tr></thead>'
                     f"<tbody>{body}</tbody></table>")
    return "\n".join(parts) or "<p class='none'>No sets.</p>"


def _html_quality(q: dict | None, uri: str | None) -> str:
    if q is None:
        return "<p class='none'>The filter's manifest is not there.</p>"
    facts = (f"<p>{q['kept']:,} of {q['scored']:,} scored videos kept (limit {_num(q['limit'])}, backend "
             f"{e(str(q['backend']))}); cut at quality score {_num(q['cut_score'], 4)}.</p>")
    rows = [_dist_row("quality score (scored)", q["scores"], 4), _dist_row("quality score (kept)", q["kept_scores"], 4)]
    rows += [_dist_row(d, stats, 4) for d, stats in q["dimensions"].items()]
    return _figure(uri, "quality scores and the cut", "No VBench scores: nothing was ranked.") + facts + \
        _table(DIST_HEADERS, rows, "num")


def _html_captions(card: dict, uri: str | None) -> str:
    rows = [_dist_row(f"{n}: {t} words", d, 1) for n, s in card["sets"].items() for t, d in s["caption_words"].items()]
    return _figure(uri, "words per training text", "No training texts.") + _table(DIST_HEADERS, rows, "num")


def _html_screening(s: dict | None) -> str:
    if s is None:
        return "<p class='none'>The screening's manifest is not there.</p>"
    cls = "warning" if not s["screened_by_a_person"] else "setting"
    rows = [[e(c), _num(v["rows"]), _num(v["kept"]), _num(v["rejected"]), _num(v["not_reviewed"]),
             _num(v["keep_rate"])] for c, v in s.get("by_category", {}).items()]
    return f'<p class="{cls}">{e(screening_sentence(s))}</p>' + \
        _table(["category", "rows", "kept", "rejected", "not reviewed", "keep rate"], rows, "num") + \
        _html_prescreen(s.get("prescreen"))


def _html_prescreen(p: dict | None) -> str:
    """The pre-screen's scores, and once people decided, how well it predicted them."""
    if p is None:
        return ""
    rows = [_dist_row("all scored", p["scores"]), _dist_row("kept", p["kept"]),
            _dist_row("rejected in screening", p["rejected"])]
    auto = f" {p['auto_rejected']:,} were rejected by the pre-screen alone (auto_reject_below)." \
        if p["auto_rejected"] else ""
    pred = p["prediction"]
    if pred is None:
        said = "No decisions by people to compare the pre-screen with yet."
    else:
        said = (f"{pred['rejections_in_bottom_third']:.0%} of the rejections fell in the bottom third of the "
                f"{pred['screened']:,} screened videos by pre-screen score (a score that predicted nothing would "
                "put a third there).")
    return (f'<h4>Pre-screen</h4><p>{p["scored"]:,} videos scored (agreement with the event text, consistency '
            f"with the start image, VBench quality); the review pages showed them best first.{e(auto)} "
            f"{e(said)}</p>" + _table(DIST_HEADERS, rows, "num"))


def _html_mixture(card: dict, uri: str | None) -> str:
    mix = card["mixture"]
    if mix is None:
        return "<p class='none'>No mixture in this build.</p>"
    rows = [[e(n), _num(v), _num(mix["realized"].get(n, 0.0))] for n, v in mix["requested"].items()]
    by_task = [[e(k), _num(v)] for k, v in mix["sets_by_task"].items()]
    return (_figure(uri, "requested and realized shares", "") +
            f"<p>{e(mix['file'])}: {mix['simulated_steps']:,} simulated steps, schedule "
            f"{e(' / '.join(mix['schedule']))}; {e(mix['note'])}.</p>" +
            _table(["set", "requested", "realized"], rows, "num") + _table(["set / task", "share"], by_task, "num"))


def _html_time(card: dict, uri: str | None) -> str:
    st = card["stages"]
    rows = [[e(s["name"]), _num(float(s["seconds"]), 2), e(str(s["device"])), _num(s["gpu_hours"], 4)]
            for s in st["steps"]]
    gpu = f", {st['gpu_hours']:.4f} GPU-hours" if st["gpu_hours"] is not None else ", no GPU-hours recorded"
    return (_figure(uri, "seconds per step", "No steps recorded.") +
            f"<p>{st['seconds']:,.2f} s in all{gpu}; {e(st['note'])}.</p>" +
            _table(["step", "seconds", "device", "GPU-hours"], rows, "num"))


def _html_frames(extras: Extras) -> str:
    parts = []
    for name, thumbs in extras.thumbs.items():
        cells = []
        for t in thumbs:
            image = (f'<img alt="first frame of {e(t.key)}" src="data:image/jpeg;base64,'
                     f'{base64.b64encode(t.jpeg).decode("ascii")}">' if t.jpeg else
                     "<div class='none'>the mp4 member could not be decoded</div>")
            cells.append(f"<figure>{image}<figcaption><code>{e(t.key)}</code><br>{e(t.text)}</figcaption></figure>")
        parts.append(f"<h3>{e(name)}</h3><div class='frames'>{''.join(cells) or '<p class=none>No samples.</p>'}"
                     "</div>")
    return "\n".join(parts) or "<p class='none'>No sets.</p>"


def _html_sources(card: dict) -> str:
    rows = [[e(n), e(s["source"].get("source", "")), e(s["source"].get("made", "")), e(s["source"].get("licence", "")),
             e(models_text(s["models"]))] for n, s in card["sets"].items()]
    return _table(["set", "source", "made by", "licence", "models in this build"], rows) + \
        "<p>Check each source's terms before redistributing the shards.</p>"
