"""Captioning prompts as versioned data: load a YAML prompt file, render chat messages, attach frames.

The wording lives in `captioning/prompts/*.yaml`, not here, for the same reason the action phrases do: captions are
tied to the exact question asked, so each prompt file carries a `version` that is stored on every caption, and a
change of wording is a new file (or a bumped version), reviewable as a text diff.

A prompt file holds `version`, `system`, `user` (with `{num_frames}` and `{scene_hint}`), optionally `scene_hint`
(with `{scene_caption}`) and `few_shot` (example answers, text only, rendered into `{examples}` of the system
message: with no images to pair them with, fake user/assistant turns would only confuse the model about which
images it is looking at). Unknown keys, missing or unexpected placeholders and few-shot examples nobody renders
are errors, found when the file is loaded rather than on the first request.

`messages_with_images` builds the OpenAI chat format vLLM serves InternVL with: one user message whose content is,
per frame, a text part `Frame{i}: <image>` and an `image_url` part with the JPEG as a base64 data URL, then the
question. vLLM joins the text parts with newlines and puts each image where its `<image>` placeholder stands, so
the model sees `Frame1: <image>\\nFrame2: <image>\\n...question`, the layout of InternVL's own video chat.
"""

from __future__ import annotations

import base64
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from yume_core.config import ConfigError, load_named_yaml

__all__ = ["PROMPT_DIR", "Prompt", "PromptError", "available_prompts", "load_prompt"]

PROMPT_DIR = Path(__file__).with_name("prompts")
_KEYS = {"version", "system", "user", "scene_hint", "few_shot"}
_FIELDS = {  # placeholders each template must / may contain
    "system": (set(), {"examples"}),
    "user": ({"num_frames"}, {"scene_hint"}),
    "scene_hint": ({"scene_caption"}, set()),
}


class PromptError(ConfigError):
    """A prompt file that is not a valid prompt; the message names the file and the problem (a ConfigError: the
    command ends with that one line)."""


@dataclass(frozen=True)
class Prompt:
    version: str
    system: str
    user: str
    scene_hint: str | None
    few_shot: tuple[str, ...]
    source: str

    def render(self, num_frames: int, scene_caption: str | None = None) -> list[dict]:
        """System and user messages as OpenAI chat dicts, text only (the frames are added by
        `messages_with_images`). A blank or missing `scene_caption` leaves the hint out."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        hint = ""
        if self.scene_hint and scene_caption and scene_caption.strip():
            hint = "\n\n" + self.scene_hint.format(scene_caption=" ".join(scene_caption.split()))
        examples = "\n".join(f"{i}. {text}" for i, text in enumerate(self.few_shot, 1))
        return [
            {"role": "system", "content": self.system.format(examples=examples)},
            {"role": "user", "content": self.user.format(num_frames=num_frames, scene_hint=hint)},
        ]

    def messages_with_images(
        self, jpegs: Sequence[bytes], scene_caption: str | None = None, image_placeholder: str | None = "<image>"
    ) -> list[dict]:
        """The chat request for these frames: the system message, then one user message with a `Frame{i}:` text
        part and an `image_url` part (base64 JPEG data URL) per frame, 1-based, followed by the question.

        `image_placeholder` is appended to each frame label (`Frame1: <image>`) so that vLLM places the image
        there; pass None for servers that place images by the position of the parts instead.
        """
        if not jpegs:
            raise ValueError("no frames: a caption request needs at least one image")
        if scene_caption and image_placeholder:  # a stray placeholder in the data would take a frame's place
            scene_caption = scene_caption.replace(image_placeholder, " ")
        system, user = self.render(len(jpegs), scene_caption)
        content: list[dict] = []
        for i, jpeg in enumerate(jpegs, 1):
            label = f"Frame{i}:" + (f" {image_placeholder}" if image_placeholder else "")
            url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
            content.append({"type": "text", "text": label})
            content.append({"type": "image_url", "image_url": {"url": url}})
        content.append({"type": "text", "text": user["content"]})
        return [system, {"role": "user", "content": content}]


def available_prompts() -> list[str]:
    """Versions of the packaged prompt files (`event-v1` is `prompts/event_v1.yaml`)."""
    return sorted(p.stem.replace("_", "-") for p in PROMPT_DIR.glob("*.yaml"))


def load_prompt(name_or_path: str | Path = "event-v1") -> Prompt:
    """A packaged prompt by version (see `available_prompts()`) or a YAML prompt file by path; raises PromptError
    with the file and the problem when the file is not a valid prompt."""
    path, data = load_named_yaml(name_or_path, PROMPT_DIR, "prompt", PromptError, available_prompts(),
                                 file_name=str(name_or_path).replace("-", "_"))
    src = str(path)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise PromptError(f"{src}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
    for key in ("version", "system", "user"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise PromptError(f"{src}: '{key}' must be a non-empty string")
    version = data["version"].strip()
    if path.parent == PROMPT_DIR and version.replace("-", "_") != path.stem:
        raise PromptError(f"{src}: declares version {version!r}, which does not match its file name; rename one")
    scene_hint = data.get("scene_hint")
    if scene_hint is not None and not (isinstance(scene_hint, str) and scene_hint.strip()):
        raise PromptError(f"{src}: 'scene_hint' must be a non-empty string when given")
    few_shot = data.get("few_shot") or []
    if not isinstance(few_shot, list) or not all(isinstance(x, str) and x.strip() for x in few_shot):
        raise PromptError(f"{src}: 'few_shot' must be a list of non-empty example answers")
    for key, (required, optional) in _FIELDS.items():
        if key in data and data[key] is not None:
            _check_fields(src, key, data[key], required, optional)
    if few_shot and "{examples}" not in data["system"]:
        raise PromptError(f"{src}: 'few_shot' is given but 'system' has no {{examples}} placeholder to show it")
    if not few_shot and "{examples}" in data["system"]:
        raise PromptError(f"{src}: 'system' has an {{examples}} placeholder but 'few_shot' is empty")
    if scene_hint is None and "{scene_hint}" in data["user"]:
        raise PromptError(f"{src}: 'user' has a {{scene_hint}} placeholder but there is no 'scene_hint' text")
    return Prompt(
        version=version,
        system=data["system"].strip(),
        user=data["user"].strip(),
        scene_hint=scene_hint.strip() if scene_hint else None,
        few_shot=tuple(" ".join(x.split()) for x in few_shot),
        source=src,
    )


def _check_fields(src: str, key: str, template: str, required: set[str], optional: set[str]) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:  # an unmatched brace
        raise PromptError(f"{src}: '{key}' is not a valid template ({e}); write literal braces as {{{{ }}}}") from None
    missing, extra = required - fields, fields - required - optional
    if missing or extra:
        raise PromptError(
            f"{src}: '{key}' must contain the placeholders {sorted(required)} and may contain {sorted(optional)}; "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
