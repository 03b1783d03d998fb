"""The data card of a finished `yume-data build`: `OUT/README.md`, `OUT/card.html` and `OUT/card.json`.

One dict is built from what the build left on disk (`collect`), and the three files are renderings of it:

    card.json   the dict itself, for programs: every count, share and distribution the page shows
    README.md   a Hugging Face dataset card (`render_markdown`)
    card.html   a self-contained page for a person (`render_html`, with the plots of `figures`)

The modules, in the order the data flows:

    stats            distributions as mergeable moments (`describe`, `merge_stats`)
    scan             one pass over a set's tars: sample jsons, member types, a few first frames
    features         the set's Hugging Face `dataset_info` features, from its scan
    collect          the card dict: a section per set (recipe, source, figures, quality cut or screening), the
                     funnel of the declared steps, mixture, stages, warnings
    sentences        what both renderings say in the same words
    render_markdown  README.md (front matter and text)
    figures          the PNG plots of card.html
    render_html      card.html (filled into template.html)

The same build gives the same bytes: no clock but the record's `build_time`, sets and stages in a fixed order,
PNGs without version metadata, JPEG frames from a deterministic decoder. The one thing that varies between two runs
of the same build is the seconds each step took (a run log, taken from the record as it is).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.card import collect, render_html, render_markdown
from pipelines.card.stats import describe, merge_stats
from yume_core.storage import atomic_write_text

__all__ = ["describe", "merge_stats", "write_card"]


def write_card(out: str | Path, record: dict) -> dict[str, Path]:
    """Write OUT/README.md, OUT/card.html and OUT/card.json for a finished build; return their paths."""
    out = Path(out)
    card, extras = collect.collect(out, record)
    paths = {"readme": out / "README.md", "html": out / "card.html", "json": out / "card.json"}
    atomic_write_text(paths["json"], json.dumps(card, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(paths["readme"], render_markdown.render_readme(card, extras))
    atomic_write_text(paths["html"], render_html.render_html(card, extras))
    return paths
