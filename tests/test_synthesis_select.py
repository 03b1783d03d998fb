"""Prompt selection: near-duplicates found and nothing else, sampling deterministic, bad rows counted, CLI."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipelines.cli import main
from synthesis.dedup import content_id, normalize_captions, window_pairs
from synthesis.dedup_embed import EmbedConfig, ivf_pairs
from synthesis.dedup_minhash import (
    MinHashConfig,
    ShingleHasher,
    exact_jaccard,
    shingle_sets,
)
from synthesis.select import SelectConfig, select_prompts, selected
from synthesis.select_csv import OpenVidFormatError, read_openvid_csv
from synthesis.select_sample import EDIT_VARIANTS, OPENVID_HEADER, make_captions, write_openvid_csv

BASE = (
    "The video shows a young woman in a red coat walking her dog along a snowy park path at dusk, "
    "while street lamps flicker on and children build a snowman in the background."
)
DISTINCT = [
    BASE,
    # case and punctuation only
    ("THE VIDEO SHOWS A YOUNG WOMAN IN A RED COAT WALKING HER DOG ALONG A SNOWY PARK PATH AT DUSK "
     "WHILE STREET LAMPS FLICKER ON AND CHILDREN BUILD A SNOWMAN IN THE BACKGROUND!!"),
    # one changed word
    BASE.replace("red coat", "blue coat"),
    # same style, different content: must be kept
    ("The video shows an old man in a green jacket feeding pigeons on a sunny city square at noon, "
     "while tourists take photographs and a street musician plays the violin nearby."),
    ("The video shows a chef in a busy restaurant kitchen chopping vegetables and tossing noodles in a wok, "
     "flames rising as waiters carry plates to the dining room."),
    "A drone flies over a misty mountain lake at sunrise, revealing pine forests and a small wooden cabin.",
]


def _rows(tmp_path, captions, **kw):
    path = write_openvid_csv(tmp_path / "openvid.csv", captions, **kw)
    return read_openvid_csv(path)


def _verdicts(table):
    return {r["row"]: r for r in table.to_pylist() if r["row"] is not None}


def test_case_punctuation_and_one_changed_word_are_duplicates_distinct_kept(tmp_path):
    table, report = select_prompts(_rows(tmp_path, DISTINCT), SelectConfig(count=4))
    v = _verdicts(table)
    assert v[0]["status"] == "ok"
    assert (v[1]["status"], v[1]["reason"]) == ("dropped", "exact_duplicate")
    assert (v[2]["status"], v[2]["reason"]) == ("dropped", "near_duplicate")
    assert v[1]["duplicate_of"] == v[2]["duplicate_of"] == content_id(BASE)
    assert 0.7 <= v[2]["similarity"] < 1.0
    assert [v[i]["status"] for i in (3, 4, 5)] == ["ok"] * 3
    assert report["exact_duplicates"] == 1 and report["near_duplicates"] == 1 and report["selected"] == 4
    assert report["duplicate_pairs"][0]["later"]["row"] == 2
    assert v[0]["cluster_size"] == 3


def test_planted_families_recovered_without_false_merges(tmp_path):
    sample = make_captions(800, dup_fraction=0.25, seed=3)
    table, _ = select_prompts(_rows(tmp_path, sample.captions), SelectConfig(count=600))
    v = _verdicts(table)
    rep = {}
    for row, r in v.items():
        rep[row] = r["prompt_id"] if r["duplicate_of"] is None else r["duplicate_of"]
    base, copy = sample.planted_pairs()
    assert len(base) == 200
    assert all(rep[b] == rep[c] for b, c in zip(base.tolist(), copy.tolist()))
    # every removed row belongs to a planted family: nothing unrelated was merged
    fam_size = np.bincount(sample.family, minlength=len(sample.family))
    removed = [row for row, r in v.items() if r["reason"] in ("exact_duplicate", "near_duplicate")]
    assert all(fam_size[sample.family[row]] > 1 for row in removed)
    kinds = {r["reason"] for row, r in v.items() if sample.variant[row] == "changed_word"}
    assert "near_duplicate" in kinds


def test_one_word_edits_of_short_captions_are_duplicates_and_their_template_alone_is_not(tmp_path):
    """8-12 words: a replaced, inserted or deleted word leaves word-3-gram Jaccard far under 0.7, yet the default
    finds each; captions sharing only the template ("The scene shows a ... in a ...") stay distinct."""
    base = "The scene shows a tall man walking in a park."
    captions = [base, base.replace("tall", "short"), base.replace("a park", "a quiet park"),
                base.replace("tall ", ""), "The scene shows a small dog running in a garden.",
                "The scene shows a red bus parked in a street."]
    table, report = select_prompts(_rows(tmp_path, captions), SelectConfig(count=3))
    v = _verdicts(table)
    assert [v[i]["reason"] for i in range(6)] == [None, "near_duplicate", "near_duplicate", "near_duplicate",
                                                   None, None]
    assert {v[i]["duplicate_of"] for i in (1, 2, 3)} == {content_id(base)}
    assert report["index"]["one_word_edit_pairs"] == 4  # the base with each variant; "short man" with "man"
    older, _ = select_prompts(_rows(tmp_path, captions), SelectConfig(count=5, minhash=MinHashConfig(short_words=0)))
    assert [_verdicts(older)[i]["reason"] for i in (1, 3)] == [None, None]  # word 3-grams alone miss these


def test_planted_one_word_edits_of_short_captions_are_found_without_false_merges(tmp_path):
    sample = make_captions(1500, dup_fraction=0.2, seed=2, short=True, variants=EDIT_VARIANTS)
    table, _ = select_prompts(_rows(tmp_path, sample.captions), SelectConfig(count=1000))
    v = _verdicts(table)
    rep = {row: r["prompt_id"] if r["duplicate_of"] is None else r["duplicate_of"] for row, r in v.items()}
    base, copy = sample.planted_pairs()
    assert all(rep[b] == rep[c] for b, c in zip(base.tolist(), copy.tolist()))
    fam_size = np.bincount(sample.family, minlength=len(sample.family))
    removed = [row for row, r in v.items() if r["reason"] == "near_duplicate"]
    assert len(removed) >= 290 and all(fam_size[sample.family[row]] > 1 for row in removed)


def test_sampling_is_seeded_and_ids_follow_the_caption(tmp_path):
    rows = _rows(tmp_path, make_captions(300, 0.1, seed=1).captions)
    a, _ = select_prompts(rows, SelectConfig(count=50, seed=7))
    b, _ = select_prompts(rows, SelectConfig(count=50, seed=7))
    c, _ = select_prompts(rows, SelectConfig(count=50, seed=8))
    sa, sb, sc = selected(a), selected(b), selected(c)
    assert sa.equals(sb)
    assert sa.num_rows == sc.num_rows == 50
    assert sa["prompt_id"].to_pylist() != sc["prompt_id"].to_pylist()
    assert sa["row"].to_pylist() == sorted(sa["row"].to_pylist())  # CSV order
    # the same caption has the same id under both seeds, and ids are unique
    ids_a = dict(zip(a["row"].to_pylist(), a["prompt_id"].to_pylist()))
    ids_c = dict(zip(c["row"].to_pylist(), c["prompt_id"].to_pylist()))
    assert ids_a == ids_c
    assert len(set(sa["prompt_id"].to_pylist())) == 50
    # duplicates do not depend on the seed
    assert a["duplicate_of"].to_pylist() == c["duplicate_of"].to_pylist()
    assert pc.sum(pc.is_valid(a["duplicate_of"])).as_py() > 0


def test_count_larger_than_available_selects_all_and_warns(tmp_path):
    rows = _rows(tmp_path, DISTINCT)
    with pytest.warns(UserWarning, match="fewer than the 50 asked"):
        _, report = select_prompts(rows, SelectConfig(count=50))
    assert report["selected"] == report["distinct"] == 4
    assert report["warnings"]


def test_bad_rows_are_counted_not_fatal(tmp_path):
    captions = DISTINCT[3:] + ["", "   ", "?!...", None]
    path = write_openvid_csv(tmp_path / "bad.csv", captions, malformed=2, bad_numbers=1)
    # a caption that is not UTF-8
    with open(path, "ab") as f:
        f.write(b'latin.mp4,"caf\xe9 scene at night with neon lights",5.0,1.0,0.99,static,100,30.0,3.3\n')
    rows = read_openvid_csv(path)
    assert len(rows.malformed) == 2 and rows.unparsed == {"aesthetic_score": 1}
    assert rows.table["aesthetic_score"][0].as_py() is None and rows.table["frame"].type == pa.int64()
    table, report = select_prompts(rows, SelectConfig(count=3))
    assert report["rows_in"] == len(captions) + 2 + 1 == table.num_rows
    assert report["invalid"] == {"caption_not_utf8": 1, "csv_malformed": 2, "empty_caption": 4}
    assert report["selected"] == 3
    assert report["selected"] + sum(report["invalid"].values()) == report["rows_in"]


def test_not_a_caption_csv_is_a_clear_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("videoFile,cameraFile\na.mp4,a.npz\n")
    with pytest.raises(OpenVidFormatError, match="no 'caption' column"):
        read_openvid_csv(p)
    result = CliRunner().invoke(main, ["select-prompts", "--csv", str(p), "--count", "1", "-o", str(tmp_path / "o.parquet")])
    assert result.exit_code != 0 and "no 'caption' column" in result.output


def test_cli_end_to_end(tmp_path):
    sample = make_captions(400, 0.2, seed=5)
    csv_path = write_openvid_csv(tmp_path / "OpenVid-1M.csv", sample.captions, malformed=1)
    out = tmp_path / "prompts.parquet"
    result = CliRunner().invoke(
        main, ["select-prompts", "--csv", str(csv_path), "--count", "100", "--seed", "3", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "duplicates removed" in result.output
    prompts = pq.read_table(out)
    assert prompts.num_rows == 100
    assert prompts.column_names[:2] == ["prompt_id", "caption"]
    assert {"aesthetic_score", "camera_motion", "seconds", "video"} <= set(prompts.column_names)
    assert set(prompts["status"].to_pylist()) == {"ok"}
    report = json.loads((tmp_path / "prompts.report.json").read_text())
    rows = pq.read_table(tmp_path / "prompts.rows.parquet")
    assert rows.num_rows == report["rows_in"] == 401
    removed = report["exact_duplicates"] + report["near_duplicates"]
    assert removed == 80  # every planted variant
    assert report["seed"] == 3 and report["method"] == "minhash"
    # the column names of OpenVid are documented as snake_cased from the header
    assert all(h.replace(" ", "_") in rows.column_names for h in OPENVID_HEADER)


def test_embedding_method_with_tiny_random_runs_and_finds_normalised_copies(tmp_path):
    caps = DISTINCT + [DISTINCT[3].upper(), DISTINCT[4] + " !"]
    path = write_openvid_csv(tmp_path / "e.csv", caps)
    out = tmp_path / "sel.parquet"
    result = CliRunner().invoke(main, [
        "select-prompts", "--csv", str(path), "--count", "3", "-o", str(out), "--method", "embedding",
        "--model", "tiny-random", "--threshold", "0.999",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "sel.report.json").read_text())
    assert report["method"] == "embedding" and report["index"]["embedding_dim"] == 32
    assert report["exact_duplicates"] == 3  # DISTINCT[1] and the two added copies
    rows = pq.read_table(tmp_path / "sel.rows.parquet")
    assert rows.num_rows == len(caps) and pq.read_table(out).num_rows == 3


def test_ivf_index_finds_planted_close_vectors_like_brute_force():
    rng = np.random.default_rng(0)
    n, d, m = 3000, 48, 150
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    noise = rng.standard_normal((m, d)).astype(np.float32)
    noise -= (noise * x[:m]).sum(1, keepdims=True) * x[:m]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copies = 0.96 * x[:m] + np.sqrt(1 - 0.96**2) * noise  # cosine 0.96 to its original
    emb = np.vstack([x, copies.astype(np.float32)])
    i, j, sim, stats = ivf_pairs(emb, EmbedConfig(threshold=0.9))
    sims = emb @ emb.T
    bi, bj = np.nonzero(np.triu(sims >= 0.9, 1))
    truth = set(zip(bi.tolist(), bj.tolist()))
    found = set(zip(i.tolist(), j.tolist()))
    assert len(truth) >= m and found <= truth
    assert len(found) / len(truth) >= 0.95
    assert stats["similarities_computed"] < 0.5 * len(emb) ** 2  # an index, not all pairs
    assert np.allclose(sim, sims[i, j], atol=1e-5)


def test_exact_jaccard_matches_python_sets():
    texts = normalize_captions(["a b c d e f", "a b c d e g", "x y", "a b c", "x y z w"])
    ptr, vals = shingle_sets(texts, ShingleHasher(2))
    u, v = np.array([0, 0, 2, 3]), np.array([1, 3, 4, 4])
    got = exact_jaccard(ptr, vals, u, v, chunk=4)

    def grams(t):
        w = t.split()
        return {tuple(w[k : k + 2]) for k in range(len(w) - 1)}

    want = [len(grams(texts[a].as_py()) & grams(texts[b].as_py())) / len(grams(texts[a].as_py()) | grams(texts[b].as_py()))
            for a, b in zip(u, v)]
    assert np.allclose(got, want)


def test_window_pairs_bounds_big_buckets():
    keys = np.array([5] * 100 + [7, 7, 9])
    i, j = window_pairs(keys, window=4)
    assert len(i) == (100 * 4 - 10) + 1  # each of 100 pairs with its next 4, plus the (7, 7) pair
    assert np.all(i < j) and np.all(keys[i] == keys[j])


def test_short_captions_hash_as_one_shingle():
    cfg = MinHashConfig(shingle=3)
    hashes, owner = ShingleHasher(cfg.shingle)(normalize_captions(["rain", "heavy rain falls now"]))
    assert owner.tolist() == [0, 1, 1] and len(set(hashes.tolist())) == 3
