"""The data card's plots: small PNGs embedded in `card.html` as data URIs, drawn from the card's own numbers.

Every function takes a part of the card dict (what `card.json` holds) and nothing else, so the page shows exactly
what the JSON says and a plot never reads the data a second way. Each returns a `data:image/png;base64,...` URI, or
None when there is nothing to draw (the page then says why in words).

The bytes are reproducible: figures go through `yume_core.figures.agg_figure` (own Agg canvas, no display), one
bundled font (DejaVu Sans, which also has the arrow glyphs of the mouse labels), and the PNG is saved without the
`Software` entry, whose matplotlib version would otherwise make two installs write different cards.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from yume_core.figures import agg_figure
from yume_core.samples import TASKS

DPI = 90
STYLE = {"font.family": "DejaVu Sans", "font.size": 8.5, "axes.spines.top": False, "axes.spines.right": False}
SET_COLORS = {"real_world": "#1f77b4", "synthetic": "#ff7f0e", "event": "#2ca02c"}
STATUS_COLORS = {"ok": "#2ca02c", "dropped": "#ffbf00", "failed": "#d62728"}


def _color(name: str) -> str:
    return SET_COLORS.get(name, "#7f7f7f")


def _png(draw, size: tuple[float, float]) -> str:
    """Run `draw(fig)` on a fresh figure in the card's style; the PNG as a data URI."""
    import matplotlib  # here, not at the top: it costs ~0.5 s to import

    with matplotlib.rc_context(STYLE):
        fig = agg_figure(figsize=size, layout="constrained")
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def funnel(stages: list[dict]) -> str | None:
    """One stacked bar per stage: ok, dropped and failed out of the rows that reached it."""
    if not stages:
        return None

    def draw(fig):
        ax = fig.subplots()
        labels = [f"{s['set']}: {s['step']}" for s in stages][::-1]
        y = np.arange(len(stages))
        left = np.zeros(len(stages))
        for status in ("ok", "dropped", "failed"):
            values = np.array([s[status] for s in stages][::-1], dtype=float)
            ax.barh(y, values, left=left, color=STATUS_COLORS[status], label=status)
            left += values
        ax.set_yticks(y, labels)
        ax.set_xlabel("rows")
        ax.legend(loc="lower right", ncols=3)

    return _png(draw, (7.5, 0.32 * len(stages) + 1.0))


def clips(sets: dict[str, dict]) -> str | None:
    """Clip length histogram per set, and samples per resolution."""
    with_clips = {n: s for n, s in sets.items() if s["samples"]}
    if not with_clips:
        return None

    def draw(fig):
        ax_len, ax_res = fig.subplots(1, 2)
        for name, s in with_clips.items():
            hist = s["clip_seconds"]["histogram"]
            ax_len.stairs(hist["counts"], hist["edges"], color=_color(name), fill=True, alpha=0.55, label=name)
        ax_len.set_xlabel("clip length (s)")
        ax_len.set_ylabel("samples")
        ax_len.legend()
        sizes = sorted({r for s in with_clips.values() for r in s["resolution"]}, key=lambda r: (_pixels(r), r))
        width = 0.8 / len(with_clips)
        for i, (name, s) in enumerate(with_clips.items()):
            x = np.arange(len(sizes)) + (i - (len(with_clips) - 1) / 2) * width
            ax_res.bar(x, [s["resolution"].get(r, 0) for r in sizes], width, color=_color(name), label=name)
        ax_res.set_xticks(np.arange(len(sizes)), sizes, rotation=30 if len(sizes) > 4 else 0)
        ax_res.set_xlabel("width x height")
        ax_res.set_ylabel("samples")

    return _png(draw, (8.5, 3.0))


def _pixels(size: str) -> int:
    w, _, h = size.partition("x")
    return int(w) * int(h)


def quality(q: dict | None) -> str | None:
    """The synthetic set's quality scores, the kept share on top, the top-N cut as a line."""
    if not q or not q["scored"]:
        return None

    def draw(fig):
        ax = fig.subplots()
        hist = q["histogram"]
        ax.stairs(hist["scored"], hist["edges"], color="#9e9e9e", fill=True, label=f"scored ({q['scored']:,})")
        ax.stairs(hist["kept"], hist["edges"], color="#2ca02c", fill=True, label=f"kept ({q['kept']:,})")
        if q["cut_score"] is not None:
            ax.axvline(q["cut_score"], color="#d62728", linestyle="--", label=f"cut {q['cut_score']:.4f}")
        ax.set_xlabel("quality score (VBench dimensions, normalised and weighted)")
        ax.set_ylabel("videos")
        ax.legend()

    return _png(draw, (7.0, 2.8))


def captions(sets: dict[str, dict]) -> str | None:
    """Words per training text, one panel per task, one colour per set."""
    tasks = [t for t in TASKS if any(s["caption_words"].get(t, {}).get("count") for s in sets.values())]
    if not tasks:
        return None

    def draw(fig):
        axes = np.atleast_1d(fig.subplots(1, len(tasks)))
        for ax, task in zip(axes, tasks):
            for name, s in sets.items():
                dist = s["caption_words"].get(task)
                if dist and dist["count"]:
                    ax.stairs(dist["histogram"]["counts"], dist["histogram"]["edges"], color=_color(name),
                              fill=True, alpha=0.55, label=name)
            ax.set_title(f"{task} text")
            ax.set_xlabel("words")
            ax.set_ylabel("samples")
            ax.legend()

    return _png(draw, (4.2 * len(tasks), 2.8))


def mixture(mix: dict | None) -> str | None:
    """Requested weight share against the share a simulated run draws, per set."""
    if not mix:
        return None

    def draw(fig):
        ax = fig.subplots()
        names = list(mix["requested"])
        x = np.arange(len(names))
        ax.bar(x - 0.2, [mix["requested"][n] for n in names], 0.4, color="#9e9e9e", label="requested")
        ax.bar(x + 0.2, [mix["realized"].get(n, 0.0) for n in names], 0.4, color=[_color(n) for n in names],
               label="realized")
        ax.set_xticks(x, names)
        ax.set_ylabel("share of samples")
        ax.legend()

    return _png(draw, (5.5, 2.6))


def stage_times(steps: list[dict]) -> str | None:
    """Seconds per build step (of the run that did the work)."""
    if not steps:
        return None

    def draw(fig):
        ax = fig.subplots()
        y = np.arange(len(steps))
        ax.barh(y, [s["seconds"] for s in steps][::-1], color="#1f77b4")
        ax.set_yticks(y, [s["name"] for s in steps][::-1])
        ax.set_xlabel("seconds")

    return _png(draw, (6.0, 0.28 * len(steps) + 0.9))
