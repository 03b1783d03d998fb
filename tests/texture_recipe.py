"""A recipe that lives in the test folder alone: a few generated texture clips as a T2V footage set.

It shows what adding a recipe takes: this one module (inputs, a step, the card's words) and one `register` call.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipelines.build_graph import Step
from pipelines.recipes import BuildContext, BuildSet, Recipe, Section


@dataclass(frozen=True)
class TextureInputs:
    clips: int = 3


@dataclass(frozen=True)
class TextureShards:
    max_count: int = 2


class Textures(Recipe):
    name = "textures"
    kind = "footage"
    inputs = TextureInputs
    sections = {"shards": Section(TextureShards)}
    tasks = ("t2v",)
    card = {"source": "generated textures", "url": "", "licence": "CC0", "made": "rendered by the test"}

    def steps(self, s: BuildSet, ctx: BuildContext) -> list[Step]:
        import shards
        from pipelines.sample_mixture import texture_clip

        work, set_dir = ctx.layout.work(s.name), ctx.layout.set_dir(s.name)

        def run() -> dict:
            work.mkdir(parents=True, exist_ok=True)
            rows = []
            for i in range(s.inputs.clips):
                path = work / f"texture-{i}.mp4"
                texture_clip(path, seed=i, frames=17, size=(32, 32))
                rows.append({"clip_id": f"texture-{i}", "status": "ok", "reason": None, "error": None,
                             "video_path": str(path), "caption": f"a scrolling texture, number {i}",
                             "video_fps": 8.0, "video_frames": 17, "width": 32, "height": 32,
                             "video_bytes": path.stat().st_size})
            shards.write_set_shards(pa.Table.from_pylist(rows), set_dir, s.name,
                                    shards.ShardConfig(max_count=s.sections["shards"].max_count), tasks=s.tasks,
                                    kind=self.kind, roots=ctx.roots)
            return {}

        return [Step(f"{s.name}/textures", run, s.name, settings=[s.inputs.clips, s.sections["shards"].max_count],
                     outputs={"set": set_dir}, manifest=set_dir / shards.INDEX_FILE)]
