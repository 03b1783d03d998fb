"""The README's command synopsis against the commands themselves: every option a command has is listed, and every
option listed exists, so the synopsis cannot drift from `--help`."""

from __future__ import annotations

import re
from pathlib import Path

import click

from pipelines.cli import main

README = Path(__file__).parents[1] / "README.md"


def _synopsis() -> dict[tuple[str, ...], str]:
    """Each `yume-data ...` line of the "Command line" block (continuations joined), by its subcommand path."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line.startswith("yume-data "):
            continue
        words = line.split()[1:]
        path = []
        group = main
        for word in words:
            if isinstance(group, click.Group) and word in group.commands:
                path.append(word)
                group = group.commands[word]
            else:
                break
        out[tuple(path)] = line
    return out


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if cmd.hidden:
            continue
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_command_and_every_option_is_in_the_synopsis_and_nothing_else():
    synopsis = _synopsis()
    problems = []
    for path, cmd in _commands(main):
        line = synopsis.get(path)
        if line is None:
            problems.append(f"{' '.join(path)}: not in the synopsis")
            continue
        listed = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", line))
        options = {o for p in cmd.params if isinstance(p, click.Option) and not p.hidden
                   for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
        primary = [next((o for o in p.opts if o.startswith("--")), None) for p in cmd.params
                   if isinstance(p, click.Option) and not p.hidden]
        missing = sorted(o for o in primary if o and o not in listed and o != "--help")
        unknown = sorted(listed - options - {"--help"})
        if missing or unknown:
            problems.append(f"{' '.join(path)}: missing {missing}, unknown {unknown}")
    assert not problems, "\n".join(problems)
    assert set(synopsis) <= {p for p, _ in _commands(main)}, set(synopsis) - {p for p, _ in _commands(main)}
