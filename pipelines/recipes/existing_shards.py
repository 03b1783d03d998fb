"""`shards`: a set that already exists (an earlier build's, a colleague's), reused as it is.

One step: the folder's samples are verified against their index and completion markers (`shards verify`), its
files are placed under OUT/<set> (hard links where the file system allows, else copies; objects of an `s3://`
folder are fetched), and it is prepared for Energon under its new name. Nothing is re-encoded: the tars and the
index keep their bytes, so the samples' own `set` field keeps the name they were written under, while the mixture's
`set` subflavor, the card and the trainer's metrics use the name this build gives it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.build_graph import Step
from pipelines.recipes.base import BuildContext, BuildSet, Recipe, require
from yume_core import remote
from yume_core.errors import InputError

INDEX_DIR = "_index"


@dataclass(frozen=True)
class ShardsInputs:
    path: str | None = None  # a set folder (shard-*.tar, index.parquet, _index/), local or a URL


class ExistingShards(Recipe):
    name = "shards"
    kind = "any"  # whatever the samples are: each keeps its own kind
    inputs = ShardsInputs
    tasks = ("t2v", "i2v")  # at most: the mixture keeps those its samples train
    card = {
        "source": "an existing set of schema-v1 shards, reused as it is",
        "url": "",
        "licence": "that of the set's own sources (see its samples' provenance and its build's card)",
        "made": "verified against its index and completion markers; not re-encoded",
    }

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        import shards

        require(s.inputs, s.name, "path")
        source, set_dir = s.inputs.path, ctx.layout.set_dir(s.name)

        def run() -> dict:
            report = shards.verify_shards(source)
            if not report.ok:
                first = shards.format_report(report).splitlines()
                raise InputError(source, f"the shards of set {s.name} fail verification ({len(report.errors)} "
                                 f"problem(s)): {' '.join(first[1:3])}", f"run `yume-data shards verify {source}`")
            _place(source, set_dir)
            shards.prepare_energon(set_dir, s.name)
            return {"samples": report.samples}

        return [Step(f"{s.name}/shards", run, s.name, files=(source,), settings=list(s.tasks),
                     outputs={"set": set_dir}, manifest=set_dir / shards.INDEX_FILE)]


def _place(source: str, set_dir: Path) -> None:
    """The set's tars, index and markers under `set_dir`, byte for byte; what was there before goes."""
    if set_dir.exists():
        shutil.rmtree(set_dir)
    (set_dir / INDEX_DIR).mkdir(parents=True)
    if remote.is_url(source):
        for folder, prefix in ((source, ""), (remote.join(source, INDEX_DIR), f"{INDEX_DIR}/")):
            for url in remote.list_files(folder):
                rel = prefix + url.rsplit("/", 1)[-1]
                if _wanted(rel):
                    with remote.input_file(url) as local:
                        _link_or_copy(Path(local), set_dir / rel)
        return
    root = Path(source)
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and _wanted(rel):
            _link_or_copy(path, set_dir / rel)


def _wanted(rel: str) -> bool:
    """What a set is made of; its Energon files are written anew for its new name."""
    return rel == "index.parquet" or (rel.endswith(".tar") and "/" not in rel) or \
        (rel.startswith(f"{INDEX_DIR}/") and rel.count("/") == 1)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
