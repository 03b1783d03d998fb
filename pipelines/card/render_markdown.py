"""README.md: a Hugging Face dataset card, YAML front matter with one `configs` entry per set (its tars) and the
`dataset_info` features and sizes `datasets` needs, then the counts, sources and licences in words."""

from __future__ import annotations

import yaml

from pipelines.card.collect import Extras
from pipelines.card.sentences import models_text, screening_sentence


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def front_matter(card: dict, extras: Extras) -> dict:
    """The Hub's YAML metadata: one config per set that has shards, its features and sizes."""
    built = [n for n, s in card["sets"].items() if s["shards"]]
    configs, infos = [], []
    for i, name in enumerate(built):
        s = card["sets"][name]
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": s["data_files"]}],
                        **({"default": True} if i == 0 else {})})
        infos.append({"config_name": name, "features": extras.features[name],
                      "splits": [{"name": "train", "num_bytes": s["bytes"], "num_examples": s["samples"]}],
                      "download_size": s["bytes"], "dataset_size": s["bytes"]})
    return {
        "pretty_name": card["title"],
        "license": "other",
        "license_name": "mixed-sources",
        "task_categories": ["text-to-video", "image-to-video"],
        "tags": ["video", "world-model", "webdataset", "interactive-video", "camera-control", "yume", "sekai"],
        "size_categories": [_size_category(sum(s["samples"] for s in card["sets"].values()))],
        "configs": configs,
        "dataset_info": infos,
    }


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_readme(card: dict, extras: Extras) -> str:
    meta = yaml.safe_dump(front_matter(card, extras), sort_keys=False, allow_unicode=True, width=120)
    build = card["build"]
    parts = [f"---\n{meta}---", f"# {card['title']}",
             f"Built {build['build_time']} with the `{build['preset'] or 'custom'}` preset of `yume-data build`. "
             "`card.html` beside this file shows the plots (funnel, clip lengths, actions, scores, sample frames); "
             "`card.json` holds every figure for programs."]
    parts += [f"> **{w}**" for w in card["warnings"]]
    parts += ["## Sets", _md_table(
        ["set", "samples", "failed", "shards", "bytes", "hours", "tasks", "weight", "files"],
        [[n, s["samples"], s["failed"], s["shards"], s["bytes"], f"{s['hours']:.3f}", "+".join(s["tasks"]),
          s["weight"], f"`{s['data_files']}`"] for n, s in card["sets"].items()])]
    for name, s in card["sets"].items():
        parts += [f"### {name}", f"Recipe `{s['recipe']}`: {s['source'].get('made', '')}. Trains "
                  f"**{' and '.join(t.upper() for t in s['tasks'])}** with weight {s['weight']}."
                  + (f" {s['tasks_note']}" if s.get("tasks_note") else "")]
        if s.get("screening"):
            sentence = screening_sentence(s["screening"])
            parts += [sentence if s["screening"]["screened_by_a_person"] else f"**{sentence}**"]
    parts += ["## Loading", _loading_text(card)]
    parts += ["## How it was made", "Rows in, kept, dropped and failed at every stage (reasons in `card.json`):",
              _md_table(["stage", "set", "in", "ok", "dropped", "failed", "reasons"],
                        [[f["step"], f["set"], f["in"], f["ok"], f["dropped"], f["failed"], _reasons(f)]
                         for f in card["funnel"]])]
    if card["mixture"]:
        mix = card["mixture"]
        parts += ["## Mixture", f"`{mix['file']}` (a Megatron-Energon metadataset) weights the sets; shares over "
                  f"{mix['simulated_steps']:,} simulated trainer steps ({mix['note']}):",
                  _md_table(["set", "requested", "realized"],
                            [[n, f"{v:.3f}", f"{mix['realized'].get(n, 0.0):.3f}"]
                             for n, v in mix["requested"].items()])]
    parts += ["## Sources and licences", _md_table(
        ["set", "source", "made by", "licence", "models in this build"],
        [[n, f"[{s['source'].get('source', '')}]({s['source']['url']})" if s["source"].get("url") else
          s["source"].get("source", ""), s["source"].get("made", ""), s["source"].get("licence", ""),
          models_text(s["models"])] for n, s in card["sets"].items()]),
              "Check each source's terms before redistributing the shards."]
    parts += ["## Sample schema", f"Every `<key>.json` follows sample schema version {card['sample_schema_version']} "
              "(`yume_core/samples.py`): `set`, `tasks`, `event_text` per task (the event description, kept apart "
              "from the action description), `fps`/`frames`/`width`/`height` of the mp4 member, `actions` "
              "(keyboard and mouse labels per frame step, segments and chunks with their phrases) and `provenance`."]
    return "\n\n".join(parts) + "\n"


def _loading_text(card: dict) -> str:
    name = next(iter(n for n, s in card["sets"].items() if s["shards"]), "real_world")
    return ("Each set is a folder of WebDataset tars with `index.parquet` and a prepared Megatron-Energon "
            "`.nv-meta/`:\n\n```python\nfrom datasets import load_dataset\n"
            f"ds = load_dataset(\"path/to/this/folder\", \"{name}\", split=\"train\")\n\n"
            f"import glob, webdataset as wds\nsamples = wds.WebDataset(sorted(glob.glob(\"{name}/*.tar\")))\n```\n\n"
            "Energon reads `mixture.yaml` as it is (`get_train_dataset(\"mixture.yaml\", ...)`).")


def _reasons(stage: dict) -> str:
    return ", ".join(f"{r['reason']} ({r['status']}) {r['count']}" for r in stage["by_reason"]) or "-"
