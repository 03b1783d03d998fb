from dataclasses import dataclass, field

import pytest

from yume_core.config import ConfigError, from_dict, load_yaml, merge


@dataclass(frozen=True)
class Inner:
    a: int = 1
    b: float = 2.0


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    size: tuple | None = None


def test_nested_dicts_become_dataclasses_and_lists_tuples():
    cfg = from_dict(Outer, {"name": "y", "inner": {"b": 3.5}, "size": [4, 2]})
    assert cfg == Outer(name="y", inner=Inner(a=1, b=3.5), size=(4, 2))


def test_unknown_keys_are_refused_with_their_place():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) inner\.c; inner takes a, b"):
        from_dict(Outer, {"inner": {"c": 1}})


def test_merge_ignores_none_and_recurses():
    assert merge({"a": 1, "n": {"x": 1, "y": 2}}, {"a": None, "n": {"y": 3, "z": None}}) == {"a": 1, "n": {"x": 1, "y": 3}}
    assert merge({}, {"n": {"z": None}, "m": {"k": {"j": 1}}}) == {"m": {"k": {"j": 1}}}


def test_load_yaml_errors_are_clear(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(p)
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(p)


def test_presets_build_the_real_world_config():
    from pathlib import Path

    from pipelines.real_world import RealWorldConfig

    presets = Path(__file__).resolve().parents[1] / "pipelines" / "presets"
    for path in presets.glob("*.yaml"):
        cfg = from_dict(RealWorldConfig, load_yaml(path), path.name)
        assert cfg.batch_size > 0
    yume15 = from_dict(RealWorldConfig, load_yaml(presets / "yume15.yaml"))
    assert yume15.actions.translation_threshold == 1e-4 and yume15.actions.min_segment_frames == 33
