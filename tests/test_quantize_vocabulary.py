"""Action vocabularies: packaged files load completely, phrases are exact, broken files are rejected clearly."""

import pytest

from quantize_actions import KEY_LABELS, MOUSE_LABELS, VocabularyError, available_vocabularies, load_vocabulary


def test_both_vocabularies_load_with_every_label():
    assert {"yume15", "yume10"} <= set(available_vocabularies())
    for name in ("yume15", "yume10"):
        vocab = load_vocabulary(name)
        assert vocab.version == name
        assert list(vocab.keys) == list(KEY_LABELS) and list(vocab.mouse) == list(MOUSE_LABELS)
        assert all(vocab.keys.values()) and all(vocab.mouse.values())
        assert len(set(vocab.keys.values())) == 9 and len(set(vocab.mouse.values())) == 9


def test_exact_yume15_phrases():
    v = load_vocabulary("yume15")
    assert v.prefix == "First-person perspective."
    assert v.keys["W+A"] == "The camera pushes forward and moves to the left (W+A)."
    assert v.keys["None"] == "The camera's movement direction remains stationary (·)."
    assert v.mouse["↓→"] == "The camera tilts down and pans to the right (↓→)."
    assert v.mouse["·"] == "The rotation direction of the camera remains stationary (·)."
    assert v.phrase("W", "←") == (
        "First-person perspective. The camera pushes forward (W). The camera pans to the left (←)."
    )


def test_exact_yume10_phrases():
    v = load_vocabulary("yume10")
    assert v.keys["W"] == "Person moves forward (W)."
    assert v.keys["S+A"] == "Person moves backward and left (S+A)."
    assert v.keys["None"] == "Person stands still (·)."
    assert v.mouse["→"] == "Camera turns right (→)."
    assert v.mouse["↑←"] == "Camera tilts up and turns left (↑←)."
    assert v.mouse["·"] == "Camera remains still (·)."


def test_omit_still():
    v = load_vocabulary("yume15")
    assert v.phrase("None", "·") == "First-person perspective."
    assert v.phrase("None", "↑") == "First-person perspective. The camera tilts up (↑)."
    assert v.phrase("S", "·") == "First-person perspective. The camera pulls back (S)."
    assert v.phrase("None", "·", omit_still=False) == (
        "First-person perspective. The camera's movement direction remains stationary (·). "
        "The rotation direction of the camera remains stationary (·)."
    )
    with pytest.raises(VocabularyError, match=r"unknown keys label 'W\+S'"):
        v.phrase("W+S", "·")


def test_load_by_path_and_broken_files(tmp_path):
    good = load_vocabulary("yume15").source
    text = open(good, encoding="utf-8").read()
    path = tmp_path / "custom.yaml"
    path.write_text(text.replace("version: yume15", "version: custom"), encoding="utf-8")
    assert load_vocabulary(path).version == "custom"

    s_a = '  "S+A": "The camera pulls back and moves to the left (S+A)."\n'
    assert s_a in text
    path.write_text(text.replace(s_a, ""), encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"missing \['S\+A'\]") as info:
        load_vocabulary(path)
    assert str(path) in str(info.value)

    path.write_text(text.replace('"↓←":', '"↓↓":'), encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"missing \['↓←'\], unknown \['↓↓'\]"):
        load_vocabulary(path)

    path.write_text("version: [unclosed\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="not valid UTF-8 YAML"):
        load_vocabulary(path)

    with pytest.raises(VocabularyError, match="neither a packaged name"):
        load_vocabulary("yume99")


def test_a_config_naming_an_unknown_vocabulary_fails_at_once():
    from quantize_actions import QuantizeConfig, VocabularyError

    with pytest.raises(VocabularyError, match="yume99"):
        QuantizeConfig(vocabulary="yume99")
