"""The action labels and the phrases a text encoder sees for them, loaded from versioned YAML files.

This is the contract between the stage that writes prompts (`quantize_actions`) and the trainer that looks their
embeddings up (`training_stub`), so it lives in the core: both read the same labels and the same files.

The phrases are data, not code: Yume-1.0 and Yume-1.5 use different wordings for the same labels, and a model is
tied to the exact strings it was trained on, so a dataset records which vocabulary version produced its prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from yume_core.config import ConfigError, load_named_yaml

KEY_LABELS = ("None", "W", "S", "D", "A", "W+D", "W+A", "S+D", "S+A")
MOUSE_LABELS = ("·", "→", "←", "↑", "↓", "↑→", "↑←", "↓→", "↓←")
NUM_LABELS = 9
STILL_KEYS, STILL_MOUSE = KEY_LABELS[0], MOUSE_LABELS[0]

VOCABULARY_DIR = Path(__file__).with_name("vocabularies")


class VocabularyError(ConfigError):
    """A vocabulary file or label that is not valid; the message names the file (or label) and the problem."""


@dataclass(frozen=True)
class Vocabulary:
    version: str
    prefix: str
    keys: Mapping[str, str]
    mouse: Mapping[str, str]
    source: str

    def phrase(self, keys: str, mouse: str, omit_still: bool = True) -> str:
        """Prefix + key phrase + mouse phrase. With omit_still, a None key / · mouse contributes no phrase, as in
        Yume's demo prompts, so "standing still" is expressed by absence rather than by words."""
        for label, table, kind in ((keys, self.keys, "keys"), (mouse, self.mouse, "mouse")):
            if label not in table:
                raise VocabularyError(
                    f"unknown {kind} label {label!r} for vocabulary {self.version}; known: {list(table)}"
                )
        parts = [self.prefix]
        if not (omit_still and keys == STILL_KEYS):
            parts.append(self.keys[keys])
        if not (omit_still and mouse == STILL_MOUSE):
            parts.append(self.mouse[mouse])
        return " ".join(p for p in parts if p)


    def phrase_table(self, omit_still: bool = True) -> tuple[str, ...]:
        """Phrase of every (keys, mouse) pair, at index key_code * NUM_LABELS + mouse_code: labels are codes in the
        hot path, so phrasing a batch of segments is one lookup per segment."""
        return tuple(self.phrase(k, m, omit_still) for k in KEY_LABELS for m in MOUSE_LABELS)

    def all_phrases(self) -> list[str]:
        """Every string a trainer may look up: the phrase table (exactly the strings shards hold: 81 for 9 x 9
        labels), then the prefix and each key and mouse phrase alone (still ones included), so a model may also
        condition on the parts; duplicates once (the prefix is the combined phrase of "no action")."""
        return list(dict.fromkeys([*self.phrase_table(), self.prefix, *self.keys.values(), *self.mouse.values()]))


@functools.lru_cache(maxsize=16)
def phrase_table(name_or_path: str | Path = "yume15") -> tuple[str, ...]:
    """`load_vocabulary(name).phrase_table()`, read once per process: every batch of every run phrases its spans."""
    return load_vocabulary(name_or_path).phrase_table()


def available_vocabularies() -> list[str]:
    return sorted(p.stem for p in VOCABULARY_DIR.glob("*.yaml"))


def _phrases(data: dict, field: str, labels: tuple[str, ...], source: str) -> Mapping[str, str]:
    table = data.get(field)
    if not isinstance(table, dict):
        raise VocabularyError(f"{source}: '{field}' must map each label to a phrase, found {type(table).__name__}")
    table = {str(k): v for k, v in table.items()}
    missing = [label for label in labels if label not in table]
    extra = [label for label in table if label not in labels]
    empty = [k for k in labels if k in table and not (isinstance(table[k], str) and table[k].strip())]
    if missing or extra or empty:
        raise VocabularyError(
            f"{source}: '{field}' must give a non-empty phrase for exactly the labels {list(labels)}; "
            f"missing {missing}, unknown {extra}, empty {empty}"
        )
    return MappingProxyType({label: table[label].strip() for label in labels})


def load_vocabulary(name_or_path: str | Path = "yume15") -> Vocabulary:
    """A packaged vocabulary by name (see `available_vocabularies()`) or a YAML file by path."""
    path, data = load_named_yaml(name_or_path, VOCABULARY_DIR, "vocabulary", VocabularyError,
                                 available_vocabularies())
    source = str(path)
    for field in ("version", "prefix"):
        if not isinstance(data.get(field), str):
            raise VocabularyError(f"{source}: '{field}' must be a string, found {data.get(field)!r}")
    return Vocabulary(
        version=data["version"],
        prefix=data["prefix"].strip(),
        keys=_phrases(data, "keys", KEY_LABELS, source),
        mouse=_phrases(data, "mouse", MOUSE_LABELS, source),
        source=source,
    )
