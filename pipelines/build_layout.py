"""Every path under a build's output folder, in one place.

    OUT/<set>/                 a set: shards, index.parquet, .nv-meta/ (what trainers read)
    OUT/mixture.yaml           the Energon metadataset over the sets
    OUT/README.md, card.html, card.json, build.json      the data card and the build record
    OUT/input/                 the demo's generated inputs
    OUT/work/<set>/...         what a set's steps write on the way (manifests, videos, review pages)
    OUT/work/_steps/...        one marker per finished step (`pipelines.build_graph`)

Recipes, the step graph, the card and the record ask this object for paths and never spell them, so the folder's
shape is changed here or nowhere. Records keep paths relative to OUT, so a build folder can move.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from yume_core.mixture import MIXTURE_FILE


@dataclass(frozen=True)
class Layout:
    out: Path

    def set_dir(self, name: str) -> Path:
        return self.out / name

    def work(self, set_name: str, *parts: str) -> Path:
        return self.out.joinpath("work", set_name, *parts)

    def marker(self, step: str) -> Path:
        """`step` is `<set>/<stage>` or a build-wide name (`mixture`)."""
        return self.out.joinpath("work", "_steps", *f"{step}.json".split("/"))

    @property
    def inputs(self) -> Path:
        return self.out / "input"

    @property
    def mixture(self) -> Path:
        return self.out / MIXTURE_FILE

    @property
    def record(self) -> Path:
        return self.out / "build.json"

    @property
    def card_html(self) -> Path:
        return self.out / "card.html"

    @property
    def card_markdown(self) -> Path:
        return self.out / "README.md"

    @property
    def card_json(self) -> Path:
        return self.out / "card.json"

    def rel(self, path: str | Path) -> str:
        """`path` as the record keeps it: relative to OUT, with forward slashes."""
        return Path(os.path.relpath(path, self.out)).as_posix()

    def at(self, rel: str | Path) -> Path:
        return self.out / rel
