"""Sentences README.md and card.html both say, in the same words: who screened the event set, which models made a
set."""

from __future__ import annotations


def screening_sentence(s: dict) -> str:
    if not s["screened_by_a_person"]:
        return (f"Not screened by a person: the build ran with the {s['policy']} screening policy, and {s['ok']} "
                f"of {s['rows']} generated videos went on without anyone looking at them.")
    rate = f"{s['accept_rate']:.1%}" if s["accept_rate"] is not None else "n/a"
    return (f"Screened by a person: {s['kept']} kept, {s['rejected']} rejected, {s['not_reviewed']} not reviewed "
            f"of {s['rows']} rows (accept rate {rate}).")


def models_text(models: dict) -> str:
    return "; ".join(f"{kind}: " + ", ".join(f"{m} ({n})" for m, n in c.items()) for kind, c in models.items()) \
        or "-"
