"""The sample schema shared by every set's shards (version 1): what a trainer may rely on in each `<key>.json`.

Every sample, whatever its set, has these top-level fields (always present, null where not applicable, so
Hugging Face `datasets` infers one set of features per set and the common fields agree across sets):

    schema_version   1
    set              the set's name in the build (`real_world`, `synthetic`, `event` in Yume-1.5's recipe; any
                     `[a-z0-9_]+` name a build config gives); a set reused from an earlier build keeps the name it
                     was written under, and the mixture's `set` subflavor carries the new one
    key              the sample's `__key__`
    tasks            the tasks it trains: a list of t2v / i2v
    event_text       {"t2v": text or null, "i2v": text or null}: the *event description* each task trains on
                     (null: the sample does not train that task)
    fps, frames, width, height      of the mp4 member
    actions          the keyboard/mouse labels: {keys, mouse, segments, chunks, frames, stride, ...}; the *action
                     description* of a training window is the phrases of the chunks it covers (`chunks[*].phrase`),
                     so it is kept apart from the event text and is empty for sets without labels (lists are []);
                     labels made otherwise than by Yume's published rule also say how (`mode` and its settings)
                     and carry the clip's `trajectory_flags`
    provenance       where the sample came from (manifest row, settings)

Yume-1.5's recipe (the defaults, `DEFAULT_TASKS`): real-world clips train T2V on Sekai's scene caption and I2V on
the event caption; event videos train both on their event text (a setting: the paper also says "exclusively T2V");
synthetic videos train T2V only on their prompt. Per-set fields sit beside these: real_world keeps `clip_id`,
`captions`, `metrics`, `meta`; synthetic has `synthetic` {prompt, vbench, quality_score, quality_rank, generation};
event has `event` {event_id, category, description, start_image, screening, generation}; a lab's own footage has
`footage` {caption, video}. Which of these blocks a sample carries is its *kind* (`sample_kind`), whatever the set's
name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SCHEMA_VERSION = 1
TASKS = ("t2v", "i2v")
SETS = ("real_world", "synthetic", "event")  # Yume-1.5's three sets (the presets')
# The kinds of sample: which manifest a set's samples come from, and the fields they add beside the common ones.
KIND_FIELDS = {
    "real_world": ("clip_id", "source", "captions", "metrics", "meta"),
    "synthetic": ("prompt_id", "synthetic"),
    "event": ("prompt_id", "event"),
    "footage": ("clip_id", "footage"),
}
KINDS = tuple(KIND_FIELDS)
DEFAULT_TASKS = {"real_world": ("t2v", "i2v"), "synthetic": ("t2v",), "event": ("t2v", "i2v"), "footage": ("t2v",)}
COMMON_FIELDS = ("schema_version", "set", "key", "tasks", "event_text", "fps", "frames", "width", "height",
                 "actions", "provenance")
SET_NAME = re.compile(r"[a-z0-9_]+")


def check_set_name(name: str, where: str = "set name") -> str:
    """A set's name becomes a folder, an Energon subflavor, a card section and a metrics key: keep it plain."""
    if not isinstance(name, str) or not SET_NAME.fullmatch(name):
        raise ValueError(f"{where} {name!r}: a set name is lower-case letters, digits and '_' ([a-z0-9_]+)")
    return name


def sample_kind(meta: Mapping) -> str | None:
    """The kind of a sample json: the one whose own block (`synthetic`, `event`, `footage`, or the real-world
    `captions`) it carries."""
    for kind, block in (("synthetic", "synthetic"), ("event", "event"), ("footage", "footage"),
                        ("real_world", "captions")):
        if block in meta:
            return kind
    return None


def check_tasks(tasks: Iterable[str], where: str = "tasks") -> tuple[str, ...]:
    """`tasks` in canonical order (t2v before i2v), or ValueError naming the unknown ones."""
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"{where}: {unknown or 'empty'}: every set trains a non-empty subset of {list(TASKS)}")
    return tuple(t for t in TASKS if t in tasks)


def task_fields(set_name: str, key: str, texts: Mapping[str, str | None], tasks: Iterable[str]) -> dict:
    """The schema's set/task fields of one sample. A task whose text is missing or blank is not trained."""
    check_set_name(set_name)
    wanted = check_tasks(tasks, f"{set_name}.tasks")
    event_text = {t: (texts.get(t) or None) if t in wanted else None for t in TASKS}
    event_text = {t: (v.strip() or None) if isinstance(v, str) else v for t, v in event_text.items()}
    return {
        "schema_version": SCHEMA_VERSION,
        "set": set_name,
        "key": key,
        "tasks": [t for t in wanted if event_text[t]],
        "event_text": event_text,
    }


def empty_actions() -> dict:
    """`actions` of a sample without labels: the same fields as a labelled one, with nothing in them."""
    return {"keys": [], "mouse": [], "segments": [], "chunks": [], "frames": None, "stride": None}


def check_sample(meta: Mapping) -> list[str]:
    """What is wrong with a sample json under schema 1 (empty: nothing)."""
    problems = [f"missing field {name!r}" for name in COMMON_FIELDS if name not in meta]
    kind = sample_kind(meta)
    if kind is None:
        problems.append(f"no block of any kind of sample ({', '.join(KINDS)})")
    problems += [f"missing {kind} field {name!r}" for name in KIND_FIELDS.get(kind, ()) if name not in meta]
    if problems:
        return problems
    if meta["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {meta['schema_version']!r}, expected {SCHEMA_VERSION}")
    if not isinstance(meta["set"], str) or not SET_NAME.fullmatch(meta["set"]):
        problems.append(f"set {meta['set']!r} is not a set name ([a-z0-9_]+)")
    tasks = meta["tasks"] or []
    if not isinstance(tasks, list) or set(tasks) - set(TASKS):
        problems.append(f"tasks {tasks!r} must be a list of {list(TASKS)}")
    text = meta["event_text"] or {}
    if sorted(text) != sorted(TASKS):
        problems.append(f"event_text must have exactly the keys {list(TASKS)}, has {sorted(text)}")
    for t in tasks if isinstance(tasks, list) else []:
        if not text.get(t):
            problems.append(f"task {t!r} has no event_text")
    return problems
