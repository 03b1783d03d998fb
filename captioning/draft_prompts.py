"""The prompt and the categories of event drafting, as versioned data (`captioning/prompts/events/*.yaml`).

Why data and not code: a drafted event is tied to the exact question asked and to the category texts it was asked
with, as a caption is to its prompt (`captioning.prompts`). Each file carries a `version`; every drafted event
stores both (`DraftPrompt.version_with`), and a change of wording is a new file or a bumped version.

Two files:

- the prompt (`draft-v1`: `prompts/events/draft_v1.yaml`): `version`, `system` (with `{examples}`: the
  category's examples, numbered) and `user` (with `{category_name}` and `{category_guidance}`);
- the categories (`categories-v1`: the paper's four, `prompts/events/categories_v1.yaml`; a user's own file has
  the same shape): `version` and `categories`, a mapping of category key (lower-case snake_case: the event set's
  `category` value) to `name`, `guidance`, `examples` (non-empty), `keywords` (the category check's words) and an
  optional `share` of a `--count`.

Unknown keys, missing or unexpected placeholders, empty texts and bad keys are errors found when the file loads
(a `PromptError`, so a command ends with one line naming the file), not on the first request.
"""

from __future__ import annotations

import base64
import re
import string
from dataclasses import dataclass
from pathlib import Path

from captioning.prompts import PromptError
from yume_core.config import load_named_yaml

__all__ = ["EVENT_PROMPT_DIR", "Categories", "Category", "DraftPrompt", "load_categories", "load_draft_prompt"]

EVENT_PROMPT_DIR = Path(__file__).parent / "prompts" / "events"
_PROMPT_KEYS = {"version", "system", "user"}
_PROMPT_FIELDS = {"system": ({"examples"}, set()), "user": ({"category_name", "category_guidance"}, set())}
_CATEGORY_KEYS = {"name", "guidance", "examples", "keywords", "share"}
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# endings a keyword may carry and still count ("robot" -> "robots", "robotic"; "wind" -> "windy", not "window")
_ENDINGS = r"(?:s|es|ies|ing|ed|y|ic|al|er|ers)?"


@dataclass(frozen=True)
class Category:
    key: str
    name: str
    guidance: str
    examples: tuple[str, ...]
    keywords: tuple[str, ...]
    share: float | None = None

    @property
    def pattern(self) -> re.Pattern:
        words = "|".join(re.escape(k) for k in sorted(self.keywords, key=len, reverse=True))
        return re.compile(rf"\b(?:{words}){_ENDINGS}\b", re.IGNORECASE)


@dataclass(frozen=True)
class Categories:
    version: str
    categories: tuple[Category, ...]
    source: str

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.categories)

    def get(self, key: str) -> Category:
        for c in self.categories:
            if c.key == key:
                return c
        raise KeyError(key)

    def subset(self, keys: list[str] | tuple[str, ...] | None) -> Categories:
        """Only `keys` (in the file's order); an unknown key is an error naming the known ones."""
        if not keys:
            return self
        unknown = [k for k in keys if k not in self.keys]
        if unknown:
            raise PromptError(f"{self.source}: no category {', '.join(map(repr, unknown))}; it defines "
                              f"{', '.join(self.keys)}")
        return Categories(self.version, tuple(c for c in self.categories if c.key in keys), self.source)

    def shares(self) -> dict[str, float]:
        """Each category's share of a `--count`: the file's `share`s, normalised; equal when none is given."""
        given = {c.key: c.share for c in self.categories if c.share is not None}
        if not given:
            return {c.key: 1 / len(self.categories) for c in self.categories}
        if len(given) != len(self.categories):
            missing = [c.key for c in self.categories if c.share is None]
            raise PromptError(f"{self.source}: give every category a share or none; missing for {', '.join(missing)}")
        total = sum(given.values())
        return {k: v / total for k, v in given.items()}


@dataclass(frozen=True)
class DraftPrompt:
    version: str
    system: str
    user: str
    source: str

    def version_with(self, categories: Categories) -> str:
        """What a drafted event records as its prompt version: the question's and the category texts'."""
        return f"{self.version}+{categories.version}"

    def messages(self, jpeg: bytes, category: Category, image_placeholder: str | None = "<image>") -> list[dict]:
        """The chat request for one image and one category: the system message (with the category's examples),
        then one user message with an `Image:` text part, the image as a base64 JPEG data URL and the question.
        `image_placeholder` puts the image where vLLM's InternVL template expects it (as for captions)."""
        examples = "\n".join(f"{i}. {text}" for i, text in enumerate(category.examples, 1))
        label = "Image:" + (f" {image_placeholder}" if image_placeholder else "")
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
        question = self.user.format(category_name=category.name, category_guidance=category.guidance)
        return [{"role": "system", "content": self.system.format(examples=examples)},
                {"role": "user", "content": [{"type": "text", "text": label},
                                             {"type": "image_url", "image_url": {"url": url}},
                                             {"type": "text", "text": question}]}]


def _packaged(prefix: str) -> list[str]:
    return sorted(p.stem.replace("_", "-") for p in EVENT_PROMPT_DIR.glob(f"{prefix}_*.yaml"))


def _text(src: str, data: dict, key: str, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PromptError(f"{src}: '{where}{key}' must be a non-empty string")
    return " ".join(value.split()) if where else value.strip()


def _version(src: str, path: Path, data: dict) -> str:
    version = _text(src, data, "version")
    if path.parent == EVENT_PROMPT_DIR and version.replace("-", "_") != path.stem:
        raise PromptError(f"{src}: declares version {version!r}, which does not match its file name; rename one")
    return version


def load_draft_prompt(name_or_path: str | Path = "draft-v1") -> DraftPrompt:
    """A packaged drafting prompt by version (`draft-v1`) or a YAML file by path."""
    path, data = load_named_yaml(name_or_path, EVENT_PROMPT_DIR, "drafting prompt", PromptError, _packaged("draft"),
                                 file_name=str(name_or_path).replace("-", "_"))
    src = str(path)
    unknown = sorted(set(data) - _PROMPT_KEYS)
    if unknown:
        raise PromptError(f"{src}: unknown keys {unknown}; allowed: {sorted(_PROMPT_KEYS)}")
    version = _version(src, path, data)
    texts = {key: _text(src, data, key) for key in ("system", "user")}
    for key, (required, optional) in _PROMPT_FIELDS.items():
        _check_fields(src, key, texts[key], required, optional)
    return DraftPrompt(version, texts["system"], texts["user"], src)


def load_categories(name_or_path: str | Path = "categories-v1") -> Categories:
    """A packaged categories file by version (`categories-v1`: the paper's four) or a YAML file by path."""
    path, data = load_named_yaml(name_or_path, EVENT_PROMPT_DIR, "categories file", PromptError,
                                 _packaged("categories"), file_name=str(name_or_path).replace("-", "_"))
    src = str(path)
    unknown = sorted(set(data) - {"version", "categories"})
    if unknown:
        raise PromptError(f"{src}: unknown keys {unknown}; allowed: ['categories', 'version']")
    version = _version(src, path, data)
    given = data.get("categories")
    if not isinstance(given, dict) or not given:
        raise PromptError(f"{src}: 'categories' must map category keys to their name, guidance, examples, keywords")
    return Categories(version, tuple(_category(src, key, spec) for key, spec in given.items()), src)


def _category(src: str, key, spec) -> Category:
    where = f"categories.{key}."
    if not isinstance(key, str) or not _KEY.match(key):
        raise PromptError(f"{src}: category key {key!r} must be lower-case snake_case (letters, digits, '_'): it is "
                          "the event set's category value")
    if not isinstance(spec, dict):
        raise PromptError(f"{src}: '{where[:-1]}' must be a mapping with name, guidance, examples, keywords")
    unknown = sorted(set(spec) - _CATEGORY_KEYS)
    if unknown:
        raise PromptError(f"{src}: unknown keys {unknown} in '{where[:-1]}'; allowed: {sorted(_CATEGORY_KEYS)}")
    lists = {}
    for name in ("examples", "keywords"):
        value = spec.get(name)
        if not isinstance(value, list) or not value or not all(isinstance(x, str) and x.strip() for x in value):
            raise PromptError(f"{src}: '{where}{name}' must be a non-empty list of strings")
        lists[name] = tuple(" ".join(x.split()) for x in value)
    share = spec.get("share")
    if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or share <= 0):
        raise PromptError(f"{src}: '{where}share' must be a positive number, got {share!r}")
    return Category(key, _text(src, spec, "name", where), _text(src, spec, "guidance", where), lists["examples"],
                    tuple(k.lower() for k in lists["keywords"]), None if share is None else float(share))


def _check_fields(src: str, key: str, template: str, required: set[str], optional: set[str]) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise PromptError(f"{src}: '{key}' is not a valid template ({e}); write literal braces as {{{{ }}}}") from None
    missing, extra = required - fields, fields - required - optional
    if missing or extra:
        raise PromptError(f"{src}: '{key}' must contain the placeholders {sorted(required)}; missing "
                          f"{sorted(missing)}, unknown {sorted(extra)}")
