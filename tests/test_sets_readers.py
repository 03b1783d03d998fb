"""The sets of a finished build as the trainers of the field read them: Megatron-Energon (the mixture file and each
prepared set), Hugging Face `datasets`, plain `webdataset`, and our own `shards verify`."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from shards import verify_shards
from shards.energon import IDX_SUFFIX, META_DIR
from yume_core.samples import COMMON_FIELDS, SETS, check_sample

pytestmark = pytest.mark.slow


def test_every_set_verifies_with_decoding(demo_build):
    for name in SETS:
        report = verify_shards(demo_build / name, decode=True)
        assert report.ok, (name, report.errors)
        assert report.samples > 0, name


def _blend(path: Path) -> list[dict]:
    """The mixture file's blend entries as Energon reads them (weight, path, subflavors), straight from the YAML."""
    import yaml

    return yaml.safe_load(path.read_text())["splits"]["train"]["blend"]


def _energon_samples(path: Path, n: int) -> list[dict]:
    """`n` samples of the mixture through Energon's own loader, each cooked by the cooker registered for its blend
    entry's subflavors (one per entry, matched by `has_subflavors`); each says which cooker cooked it."""
    from megatron.energon import (
        Cooker,
        DefaultTaskEncoder,
        TextSample,
        WorkerConfig,
        basic_sample_keys,
        get_loader,
        get_train_dataset,
        stateless,
    )

    def cooker(subflavors: dict) -> Cooker:
        @stateless
        def cook(sample: dict) -> TextSample:
            meta = sample["json"]  # Energon decodes the json member itself
            members = sorted(k for k in sample if not k.startswith("__"))
            info = {"cooker": subflavors, "subflavors": sample["__subflavors__"], "meta": meta, "members": members}
            return TextSample(**basic_sample_keys(sample), text=json.dumps(info))

        return Cooker(cook, has_subflavors=subflavors)

    class Encoder(DefaultTaskEncoder):
        cookers = [cooker(entry["subflavors"]) for entry in _blend(path)]

        def batch(self, samples):
            return samples

    ds = get_train_dataset(str(path), batch_size=None, shuffle_buffer_size=None, max_samples_per_sequence=None,
                           worker_config=WorkerConfig(rank=0, world_size=1, num_workers=0), task_encoder=Encoder())
    out = []
    for sample in get_loader(ds):
        out.append(json.loads(sample.text))
        if len(out) == n:
            return out
    return out


# Energon's blend draws each sample's set independently with probability weight / sum of weights
# (`BlendDataset`: one `choice_idx` per sample), so the counts of N samples are multinomial. Pearson's chi-square
# with (sets - 1) degrees of freedom then says how far they may stray: p < 0.001 fails (the loader is seeded, so a
# pass is a pass every run). N = 600 makes it sharp: weights ignored (equal shares instead of 0.5/0.25/0.25) give
# chi-square ~67 (p ~ 1e-15); 0.08 of share moved from one set to another, ~23 (p ~ 1e-5).
ENERGON_SAMPLES = 600
SHARE_P_MIN = 0.001


def test_megatron_energon_iterates_the_mixture_with_a_cooker_per_subflavor(demo_build):
    pytest.importorskip("megatron.energon")
    from scipy.stats import chisquare

    blend = _blend(demo_build / "mixture.yaml")
    assert sorted(e["subflavors"]["set"] for e in blend) == sorted(SETS)
    samples = _energon_samples(demo_build / "mixture.yaml", ENERGON_SAMPLES)
    assert len(samples) == ENERGON_SAMPLES
    for s in samples:
        meta = s["meta"]
        assert s["cooker"] == s["subflavors"]  # the cooker registered for the sample's own subflavors cooked it
        assert check_sample(meta) == []
        assert meta["set"] == s["subflavors"]["set"]
        assert set(meta["tasks"]) <= set(s["subflavors"]["tasks"].split("+"))
        assert "mp4" in s["members"] and "json" in s["members"]
        assert ("jpg" in s["members"]) == (meta["set"] == "event")
    by_set = Counter(s["subflavors"]["set"] for s in samples)
    total = sum(e["weight"] for e in blend)
    names = [e["subflavors"]["set"] for e in blend]
    expected = [ENERGON_SAMPLES * e["weight"] / total for e in blend]
    observed = [by_set[name] for name in names]
    p = chisquare(observed, expected).pvalue
    shares = {name: (round(o / ENERGON_SAMPLES, 3), round(e / ENERGON_SAMPLES, 3))
              for name, o, e in zip(names, observed, expected)}
    assert p >= SHARE_P_MIN, f"Energon's shares (drawn, from the weights) {shares}: chi-square p = {p:.2g}"


def test_our_energon_metadata_is_what_energon_prepare_writes(demo_build, tmp_path):
    """The `.tar.idx` offsets and shard counts written from the index equal Energon's own preparation of the tars."""
    pytest.importorskip("megatron.energon")
    from megatron.energon.flavors.webdataset.prepare import WebdatasetPreparator

    for name in SETS:
        ours = demo_build / name
        theirs = tmp_path / name
        theirs.mkdir()
        tars = sorted(p.name for p in ours.glob("*.tar"))
        for t in tars:
            shutil.copy(ours / t, theirs / t)
        WebdatasetPreparator.prepare_dataset(theirs, tars, split_parts_ratio=[("train", 1.0)], workers=1)
        for t in tars:
            assert (ours / (t + IDX_SUFFIX)).read_bytes() == (theirs / (t + IDX_SUFFIX)).read_bytes(), (name, t)
        info = lambda d: json.loads((d / META_DIR / ".info.json").read_text())["shard_counts"]  # noqa: E731
        assert info(ours) == info(theirs), name


def test_hugging_face_datasets_reads_each_set_with_one_set_of_features(demo_build, tmp_path):
    import datasets

    features = {}
    for name in SETS:
        tars = sorted(str(p) for p in (demo_build / name).glob("*.tar"))
        ds = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
        ds = ds.cast_column("mp4", datasets.Video(decode=False))  # decoding mp4s needs torchcodec; bytes suffice
        meta_type = ds.features["json"]
        assert set(COMMON_FIELDS) <= set(meta_type), name
        rows = list(ds)
        assert rows and all(r["json"]["set"] == name for r in rows)
        assert all(r["json"]["tasks"] for r in rows)
        features[name] = meta_type
    # the fields every set has are typed alike where both sets have values
    for field in ("schema_version", "set", "key", "tasks", "fps", "frames", "width", "height"):
        kinds = {str(features[name][field]) for name in SETS}
        assert len(kinds) == 1, (field, kinds)


def test_plain_webdataset_reads_every_set(demo_build):
    import webdataset as wds

    for name in SETS:
        tars = sorted(str(p) for p in (demo_build / name).glob("*.tar"))
        keys = [s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False)]
        assert keys and len(keys) == len(set(keys)), name


def test_mix_info_reports_each_set_and_the_realised_shares(demo_build):
    from click.testing import CliRunner

    from pipelines.cli import main
    from shards import set_stats

    result = CliRunner().invoke(main, ["mix", "info", str(demo_build / "mixture.yaml"), "--simulate", "4000", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    for s in info["sets"]:
        stats = set_stats(s["path"])
        assert (s["samples"], s["bytes"], s["shards"]) == (stats["samples"], stats["bytes"], stats["shards"])
    sim = info["simulation"]
    assert abs(sum(sim["realized"].values()) - 1) < 1e-9 and sim["tasks"] == {"i2v": 0.5, "t2v": 0.5}
    # weights are shares: the synthetic set trains T2V only and gets its share from the T2V steps alone
    assert sim["realized"] == pytest.approx(sim["requested"], abs=0.02)
    assert "synthetic/i2v" not in sim["sets_by_task"]
    assert sim["task_weights"]["t2v"]["synthetic"] == pytest.approx(2 * sim["requested"]["synthetic"])
    table = CliRunner().invoke(main, ["mix", "info", str(demo_build / "mixture.yaml"), "--simulate", "100"])
    assert "requested" in table.output and "realized" in table.output


def test_mix_info_refuses_a_file_that_is_no_mixture_in_one_line(demo_build):
    from click.testing import CliRunner

    from pipelines.cli import main

    result = CliRunner().invoke(main, ["mix", "info", str(demo_build / "build.json")])
    assert result.exit_code == 2
    assert "no splits.train.blend" in result.output and "Traceback" not in result.output
