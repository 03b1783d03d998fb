"""Prompt files: loading, validation of the file, rendering, and the OpenAI/vLLM chat format with frames."""

from __future__ import annotations

import base64
import textwrap

import pytest

from captioning.prompts import PROMPT_DIR, PromptError, available_prompts, load_prompt
from captioning.validate import check_caption, find_camera_motion


def _write(tmp_path, body: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD = """\
    version: test-v3
    system: "Caption videos. Examples: {examples}"
    user: "{num_frames} frames.{scene_hint} Describe the events."
    scene_hint: "Known: {scene_caption}"
    few_shot: ["A man sells flowers from a cart while children chase pigeons across the square."]
"""


def test_packaged_prompt_loads_with_its_version():
    assert "event-v1" in available_prompts()
    prompt = load_prompt()
    assert prompt.version == "event-v1"
    assert prompt.source == str(PROMPT_DIR / "event_v1.yaml")
    assert len(prompt.few_shot) == 2
    assert load_prompt("event-v1") == prompt


def test_packaged_examples_are_captions_the_validator_accepts():
    """The few-shot answers show the model what we want, so they must pass our own checks, camera rules included."""
    for example in load_prompt().few_shot:
        verdict = check_caption(example, "stop")
        assert verdict.ok, verdict.message
        assert 15 <= len(example.split()) <= 80  # the length the prompt asks for
        assert find_camera_motion(example) is None


def test_render_fills_the_templates():
    prompt = load_prompt()
    system, user = prompt.render(8)
    assert system["role"] == "system" and user["role"] == "user"
    assert "1. " + prompt.few_shot[0] in system["content"] and "2. " + prompt.few_shot[1] in system["content"]
    assert "These are 8 frames" in user["content"]
    assert "earlier caption" not in user["content"]
    assert "{" not in system["content"] + user["content"]  # no placeholder left behind
    assert "camera" in user["content"].lower()  # the rule against describing camera motion is asked for


def test_scene_caption_is_an_optional_hint():
    prompt = load_prompt()
    _, plain = prompt.render(4)
    _, blank = prompt.render(4, "   ")
    _, hinted = prompt.render(4, "A  busy {street}\nat night.")
    assert plain == blank
    assert 'reads: "A busy {street} at night."' in hinted["content"]  # whitespace collapsed, braces kept literally
    assert hinted["content"].startswith("These are 4 frames")


def test_messages_with_images_follow_the_internvl_frame_layout():
    prompt = load_prompt()
    jpegs = [b"\xff\xd8first", b"\xff\xd8second", b"\xff\xd8third"]
    messages = prompt.messages_with_images(jpegs, scene_caption="A plaza.")
    system, user = messages
    assert system == prompt.render(3, "A plaza.")[0]
    parts = user["content"]
    assert user["role"] == "user" and len(parts) == 2 * len(jpegs) + 1
    for i, jpeg in enumerate(jpegs):
        label, image = parts[2 * i], parts[2 * i + 1]
        assert label == {"type": "text", "text": f"Frame{i + 1}: <image>"}
        assert image["type"] == "image_url"
        head, data = image["image_url"]["url"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        assert base64.b64decode(data) == jpeg
    assert parts[-1] == {"type": "text", "text": prompt.render(3, "A plaza.")[1]["content"]}


def test_a_placeholder_in_the_scene_caption_cannot_steal_a_frame():
    messages = load_prompt().messages_with_images([b"x", b"y"], scene_caption="A <image> of a park.")
    text = "\n".join(p["text"] for p in messages[1]["content"] if p["type"] == "text")
    assert text.count("<image>") == 2 and "A of a park." in text


def test_placeholder_can_be_left_out():
    parts = load_prompt().messages_with_images([b"x", b"y"], image_placeholder=None)[1]["content"]
    assert [p["text"] for p in parts if p["type"] == "text"][:2] == ["Frame1:", "Frame2:"]


def test_no_frames_is_an_error():
    with pytest.raises(ValueError):
        load_prompt().messages_with_images([])
    with pytest.raises(ValueError):
        load_prompt().render(0)


def test_a_prompt_file_by_path(tmp_path):
    prompt = load_prompt(_write(tmp_path, GOOD))
    assert prompt.version == "test-v3"
    system, user = prompt.render(2, "a park")
    assert system["content"] == "Caption videos. Examples: 1. " + prompt.few_shot[0]
    assert user["content"] == "2 frames.\n\nKnown: a park Describe the events."


@pytest.mark.parametrize(
    "change, error",
    [
        (("version: test-v3", "version: ''"), "'version' must be a non-empty string"),
        (("    few_shot:", "    colour: red\n    few_shot:"), "unknown keys ['colour']"),
        (("{num_frames} frames.", "Some frames."), "missing ['num_frames']"),
        (("Describe the events.", "Describe {events}."), "unknown ['events']"),
        (("Known: {scene_caption}", "Known."), "missing ['scene_caption']"),
        (("Examples: {examples}", "Examples below."), "no {examples} placeholder"),
        (('few_shot: ["A man sells', 'few_shot: [""] #'), "'few_shot' must be a list of non-empty"),
        (("Describe the events.", "Describe {the events."), "not a valid template"),
        (('    scene_hint: "Known: {scene_caption}"\n', ""), "no 'scene_hint' text"),
    ],
)
def test_bad_files_are_rejected_with_the_problem(tmp_path, change, error):
    old, new = change
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(PromptError) as e:
        load_prompt(path)
    assert error in str(e.value) and str(path) in str(e.value)


def test_examples_placeholder_without_examples(tmp_path):
    no_examples = "".join(line for line in GOOD.splitlines(keepends=True) if "few_shot" not in line)
    path = _write(tmp_path, no_examples)
    with pytest.raises(PromptError, match="'few_shot' is empty"):
        load_prompt(path)


def test_not_yaml_or_not_a_mapping(tmp_path):
    with pytest.raises(PromptError, match="not valid UTF-8 YAML"):
        load_prompt(_write(tmp_path, "version: [unclosed", "a.yaml"))
    with pytest.raises(PromptError, match="expected a mapping"):
        load_prompt(_write(tmp_path, "- just\n- a list\n", "b.yaml"))


def test_packaged_file_name_must_match_its_version(tmp_path, monkeypatch):
    import captioning.prompts as prompts

    monkeypatch.setattr(prompts, "PROMPT_DIR", tmp_path)
    _write(tmp_path, GOOD, "test_v3.yaml")
    _write(tmp_path, GOOD, "test_v4.yaml")
    assert prompts.available_prompts() == ["test-v3", "test-v4"]
    assert load_prompt("test-v3").version == "test-v3"
    with pytest.raises(PromptError, match="does not match its file name"):
        load_prompt("test-v4")


def test_unknown_name_lists_the_packaged_ones():
    with pytest.raises(PromptError, match="event-v1"):
        load_prompt("event-v99")
