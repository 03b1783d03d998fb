"""Generated OpenVid-style captions with planted near-duplicates, and an OpenVid-format CSV writer.

Tests and the dedup benchmark need to know the truth: which captions are copies of which. Real OpenVid captions
cannot ship with the repository, so this writes captions in their style (several sentences, the formulaic
"The video shows ..." openings, a closing line about the atmosphere; or, with `short=True`, one or two short
sentences of 8-20 words) from large word pools, and plants families: a base caption plus variants that change
case, punctuation, or one word (`EDIT_VARIANTS` adds a word inserted or deleted). Unrelated captions share the
formulaic phrases but little else, which is what makes a dedup method's precision measurable.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yume_core.storage import atomic_write_bytes

OPENVID_HEADER = [
    "video", "caption", "aesthetic score", "motion score", "temporal consistency score", "camera motion", "frame",
    "fps", "seconds",
]
VARIANTS = ("upper", "lower", "punctuation", "changed_word")
EDIT_VARIANTS = ("changed_word", "inserted_word", "deleted_word")  # the one-word edits alone
SHORT_WORDS = (8, 20)

_SYLLABLES = [
    "ka", "lo", "mi", "ren", "sa", "tor", "vel", "da", "pon", "ri", "gu", "bel", "nas", "ti", "mor", "ek", "sun",
    "fa", "ly", "qui", "zo", "har", "pel", "wen",
]
_OPENINGS = ["The video shows", "The video features", "In the video,", "This video captures", "The scene shows"]
_CLOSINGS = [
    "The overall atmosphere of the video is {a}.", "The mood of the scene is {a} and {a}.",
    "The video conveys a sense of {n}.",
]
_SENTENCES = [
    "{a} {n} {v} near the {a} {n}.", "In the background, {n} and {n} can be seen {v}.",
    "The camera {v} as the {n} {v} through the {a} {n}.", "A {a} {n} is {v} while a {n} watches.",
    "The lighting is {a}, with {a} {n} casting {a} shadows.", "There are {a} {n} on the {n} and a {n} {v}.",
]


_SHORT_PHRASES = ["with a {a} {n}", "as a {n} {v}", "under {a} {n}", "past the {n}", "while {n} {v}", "at {a} {n}"]


def _pool(rng: np.random.Generator, size: int, suffix: str = "") -> list[str]:
    words = set()
    while len(words) < size:
        k = int(rng.integers(2, 4))
        words.add("".join(rng.choice(_SYLLABLES, k)) + suffix)
    return sorted(words)


@dataclass
class CaptionSample:
    """`captions[i]`; `family[i]` = index of the base caption it was planted from (itself for a base or an
    unrelated caption); `variant[i]` = how it differs from its base ('' for bases)."""

    captions: list[str]
    family: np.ndarray
    variant: list[str]

    def planted_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(base, copy) index pairs of every planted variant."""
        copies = np.flatnonzero(self.family != np.arange(len(self.family)))
        return self.family[copies], copies


def make_captions(n: int, dup_fraction: float = 0.1, seed: int = 0, *, short: bool = False,
                  variants: tuple[str, ...] = VARIANTS) -> CaptionSample:
    """n captions, of which about `dup_fraction` are planted variants (of the kinds in `variants`) of an earlier
    caption, in shuffled order; `short`: captions of 8-20 words instead of OpenVid's long ones."""
    rng = np.random.default_rng(seed)
    adjs, nouns, verbs = _pool(rng, 3000), _pool(rng, 6000, "o"), _pool(rng, 2000, "ing")
    n_var = round(n * dup_fraction)
    n_base = n - n_var
    make = _short_caption if short else _caption
    captions = [make(rng, adjs, nouns, verbs) for _ in range(n_base)]
    family = list(range(n_base))
    variant = [""] * n_base
    bases = rng.integers(0, n_base, n_var) if n_base else np.zeros(0, np.int64)
    kinds = rng.choice(variants, n_var)
    for b, kind in zip(bases, kinds):
        captions.append(_vary(rng, captions[b], str(kind), nouns))
        family.append(int(b))
        variant.append(str(kind))
    order = rng.permutation(n)
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    fam = np.asarray(family, np.int64)
    return CaptionSample([captions[i] for i in order], position[fam[order]], [variant[i] for i in order])


def _filler(rng, adjs, nouns, verbs):
    def fill(template: str) -> str:
        out = template
        for slot, pool in (("{a}", adjs), ("{n}", nouns), ("{v}", verbs)):
            while slot in out:
                out = out.replace(slot, pool[int(rng.integers(len(pool)))], 1)
        return out

    return fill


def _caption(rng, adjs, nouns, verbs) -> str:
    fill = _filler(rng, adjs, nouns, verbs)
    parts = [f"{_OPENINGS[int(rng.integers(len(_OPENINGS)))]} {fill('a {a} {n} {v} in a {a} {n}.')}"]
    parts += [fill(_SENTENCES[int(i)]) for i in rng.integers(0, len(_SENTENCES), int(rng.integers(2, 6)))]
    parts.append(fill(_CLOSINGS[int(rng.integers(len(_CLOSINGS)))]))
    return " ".join(p[0].upper() + p[1:] for p in parts)


def _short_caption(rng, adjs, nouns, verbs) -> str:
    """One sentence of SHORT_WORDS words: an optional formulaic opening, a subject, a verb and a place, then phrases
    until a length drawn in that range. Five content words at least, as in real short captions ("a man in a red
    jacket walks his dog along a snowy path"), so that unrelated captions are not one word apart by chance."""
    fill = _filler(rng, adjs, nouns, verbs)
    low, high = SHORT_WORDS
    target = int(rng.integers(low, high + 1))
    opening = ["", "The video shows", "In the video,", "A clip of"][int(rng.integers(4))]
    words = (f"{opening} " * bool(opening) + fill("a {a} {n} {v} near the {a} {n}")).split(" ")
    while True:
        extra = fill(_SHORT_PHRASES[int(rng.integers(len(_SHORT_PHRASES)))]).split(" ")
        if len(words) + len(extra) > target:
            break
        words += extra
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _vary(rng, text: str, kind: str, nouns: list[str]) -> str:
    if kind == "upper":
        return text.upper()
    if kind == "lower":
        return text.lower()
    if kind == "punctuation":
        return text.replace(",", "").replace(".", " !").replace("  ", " ")
    words = text.split(" ")
    k = int(rng.integers(len(words)))
    if kind == "deleted_word":
        del words[k]
    elif kind == "inserted_word":
        words.insert(k, nouns[int(rng.integers(len(nouns)))])
    else:
        words[k] = nouns[int(rng.integers(len(nouns)))]
    return " ".join(words)


def write_openvid_csv(
    path: str | Path, captions: list[str | None], seed: int = 0, malformed: int = 0, bad_numbers: int = 0
) -> Path:
    """Write captions as an OpenVid-1M CSV; `malformed` extra lines with a wrong field count go after the first
    rows, and `bad_numbers` rows get a non-numeric aesthetic score (both kinds of damage a real download shows)."""
    rng = np.random.default_rng(seed)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(OPENVID_HEADER)
    for i, cap in enumerate(captions):
        aesthetic = "n/a" if i < bad_numbers else f"{rng.uniform(4, 6.5):.6f}"
        writer.writerow([
            f"clip_{i:07d}_{int(rng.integers(1e6)):06d}.mp4", "" if cap is None else cap, aesthetic,
            f"{rng.uniform(0, 30):.6f}", f"{rng.uniform(0.9, 1):.6f}",
            str(rng.choice(["static", "pan_left", "zoom_in", "tilt_up"])), str(int(rng.integers(60, 600))),
            "30.0", f"{rng.uniform(2, 20):.3f}",
        ])
        if i == 1:
            for k in range(malformed):
                buf.write(f"broken_{k}.mp4,a caption with a stray field,1.0\n")
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
