"""Near-duplicate removal for prompt selection: recall, precision and speed, against baselines timed in the same run.

Data: `synthesis.select_sample.make_captions` (OpenVid-style captions from large word pools) with a share of planted
variants of earlier captions: upper-cased, lower-cased, punctuation changed, one word changed, inserted or deleted.
Two sets per size: long captions (OpenVid's style, ~35-70 words) and short ones (8-20 words). Truth is the family.

Reported per size and set, for the default selection and for word 3-grams alone (`short_words=0`, the method before
short captions were also compared as word sets), timed in the same run:
- recall: planted variants that end up in their base caption's cluster, overall and per kind of change;
- precision: removed rows whose kept representative is from their own family;
- time of reading the CSV and of selection (normalise + exact + MinHash LSH + verification + clusters + sample),
  and the time ratio default / 3-grams alone.

Baselines, on a subset:
- `datasketch.MinHashLSH` (the usual Python library: one MinHash object per caption, 128 permutations, same word
  3-grams, same threshold): captions per second, ours / theirs, and its recall on the same planted pairs;
- exact all-pairs Jaccard (a sparse shingle matrix times its transpose): the recall of our LSH against every pair
  at or above the threshold, not only the planted ones.
- `--ivf N`: the embedding index (`dedup_embed.ivf_pairs`) against brute-force all-pairs cosine on N random
  384-d unit vectors with planted neighbours at cosine 0.95: time ratio and recall.

    python benchmarks/bench_dedup.py --sizes 200000 1000000 --ivf 30000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from synthesis.dedup import first_of_each, normalize_captions, text_ids
from synthesis.dedup_embed import EmbedConfig, ivf_pairs
from synthesis.dedup_minhash import (
    MinHashConfig,
    ShingleHasher,
    minhash_pairs,
    shingle_sets,
)
from synthesis.select import SelectConfig, select_prompts
from synthesis.select_csv import read_openvid_csv
from synthesis.select_sample import EDIT_VARIANTS, VARIANTS, make_captions, write_openvid_csv


def quality(table: pa.Table, sample) -> dict:
    rows = table.filter(pa.compute.is_valid(table["row"]))
    row = rows["row"].to_numpy()
    pid = np.asarray(rows["prompt_id"].to_pylist(), dtype=object)
    dup_of = np.asarray(rows["duplicate_of"].to_pylist(), dtype=object)
    by_id = {p: r for p, r, d in zip(pid, row, dup_of) if d is None}  # kept rows: one per distinct caption
    rep = np.array([r if d is None else by_id[d] for r, d in zip(row, dup_of)])
    rep_of = np.empty(len(sample.family), np.int64)
    rep_of[row] = rep
    base, copy = sample.planted_pairs()
    hit = rep_of[base] == rep_of[copy]
    kinds = np.array(sample.variant)[copy]
    removed = np.flatnonzero(dup_of != None)
    correct = sample.family[row[removed]] == sample.family[rep[removed]]
    return {
        "recall": float(hit.mean()),
        "recall_by_kind": {str(k): round(float(hit[kinds == k].mean()), 4) for k in sorted(set(kinds))},
        "removed": len(removed),
        "precision": float(correct.mean()) if len(removed) else 1.0,
    }


METHODS = {"default": MinHashConfig(), "3-grams alone": MinHashConfig(short_words=0)}


def run_size(n: int, dup_fraction: float, seed: int, short: bool) -> tuple[dict, object]:
    """One generated set, read once, selected with each of METHODS (alternating order over two rounds, so neither
    always runs on a warmer cache); times are the faster round's."""
    sample = make_captions(n, dup_fraction, seed, short=short, variants=VARIANTS + EDIT_VARIANTS[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_openvid_csv(Path(tmp) / "openvid.csv", sample.captions, seed=seed)
        t0 = time.perf_counter()
        rows = read_openvid_csv(path)
        t_read = time.perf_counter() - t0
    out = {"n": n, "set": "short" if short else "long", "read_s": round(t_read, 2)}
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for names in (list(METHODS), list(METHODS)[::-1]):
        for name in names:
            t0 = time.perf_counter()
            table, report = select_prompts(rows, SelectConfig(count=int(n * 0.8), seed=seed, minhash=METHODS[name]))
            times[name].append(time.perf_counter() - t0)
            out[name] = {**quality(table, sample), "index": report["index"]}
    for name in METHODS:
        out[name]["select_s"] = round(min(times[name]), 2)
    out["time_ratio"] = round(min(times["default"]) / min(times["3-grams alone"]), 3)
    return out, sample


def datasketch_baseline(captions: list[str], threshold: float, k: int) -> tuple[float, list[tuple[int, int]]]:
    """Seconds and found pairs for datasketch over normalised captions (one MinHash per caption, query then insert)."""
    from datasketch import MinHash, MinHashLSH

    norm = normalize_captions(captions).to_pylist()
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    pairs = []
    for i, text in enumerate(norm):
        words = text.split(" ")
        grams = {" ".join(words[s : s + k]).encode() for s in range(max(1, len(words) - k + 1))}
        m = MinHash(num_perm=128)
        m.update_batch(list(grams))
        pairs += [(int(j), i) for j in lsh.query(m)]
        lsh.insert(str(i), m)
    return time.perf_counter() - t0, pairs


def ours_on_subset(captions: list[str], cfg: MinHashConfig):
    """Seconds, found pairs (as rows of the first copy of each text), text ids, first row of each text."""
    t0 = time.perf_counter()
    norm = normalize_captions(captions)
    ids = text_ids(norm)
    first = first_of_each(ids)
    i, j, _, _ = minhash_pairs(norm.take(pa.array(first)), cfg)
    seconds = time.perf_counter() - t0
    return seconds, set(zip(first[i].tolist(), first[j].tolist())), ids, first


def exact_pairs(texts: pa.Array, cfg: MinHashConfig) -> set:
    """All pairs with word-shingle Jaccard >= threshold, by a sparse matrix product (exact, O(n^2) pairs)."""
    from scipy.sparse import csr_matrix

    ptr, vals = shingle_sets(texts, ShingleHasher(cfg.shingle))
    _, col = np.unique(vals, return_inverse=True)
    x = csr_matrix((np.ones(len(vals), np.float32), col, ptr), shape=(len(texts), col.max() + 1))
    inter = (x @ x.T).tocoo()
    sizes = np.diff(ptr)
    keep = inter.row < inter.col
    r, c, v = inter.row[keep], inter.col[keep], inter.data[keep]
    jac = v / (sizes[r] + sizes[c] - v)
    ok = jac >= cfg.threshold - 1e-9
    return set(zip(r[ok].tolist(), c[ok].tolist()))


def baselines(sample, subset: int, exact_subset: int) -> dict:
    cfg = MinHashConfig()
    caps = sample.captions[:subset]
    t_ours, ours, ids, first = ours_on_subset(caps, cfg)
    try:
        t_ds, ds_pairs = datasketch_baseline(caps, cfg.threshold, cfg.shingle)
    except ImportError:
        print("datasketch is not installed (pip install datasketch): its baseline is skipped")
        t_ds, ds_pairs = float("nan"), []
    # planted pairs inside the subset, as pairs of distinct normalised texts (exact copies are not LSH's job)
    base, copy = sample.planted_pairs()
    inside = (base < subset) & (copy < subset)
    planted = {tuple(sorted((int(first[ids[b]]), int(first[ids[c]])))) for b, c in zip(base[inside], copy[inside])}
    planted = {p for p in planted if p[0] != p[1]}
    ds_norm = {tuple(sorted((int(first[ids[a]]), int(first[ids[b]])))) for a, b in ds_pairs}
    out = {
        "subset": subset,
        "ours_s": round(t_ours, 3),
        "datasketch_s": round(t_ds, 3),
        "speedup_vs_datasketch": round(t_ds / t_ours, 1),
        "planted_near_pairs": len(planted),
        "ours_recall_planted": round(len(planted & ours) / max(1, len(planted)), 4),
        "datasketch_recall_planted": round(len(planted & ds_norm) / max(1, len(planted)), 4),
    }
    caps = sample.captions[:exact_subset]
    norm = normalize_captions(caps)
    ids = text_ids(norm)
    first = first_of_each(ids)
    texts = norm.take(pa.array(first))
    t0 = time.perf_counter()
    truth = exact_pairs(texts, cfg)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    i, j, _, _ = minhash_pairs(texts, cfg)
    t_lsh = time.perf_counter() - t0
    found = set(zip(i.tolist(), j.tolist()))
    out.update({
        "exact_subset": exact_subset, "exact_pairs": len(truth),
        "lsh_recall_vs_exact": round(len(truth & found) / max(1, len(truth)), 4),
        "lsh_false_pairs": len(found - truth), "exact_all_pairs_s": round(t_exact, 3), "lsh_s": round(t_lsh, 3),
    })
    return out


def ivf_bench(n: int, d: int = 384, planted: int = 2000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = min(planted, n // 10)
    noise = rng.standard_normal((m, d)).astype(np.float32)
    noise -= (noise * x[:m]).sum(1, keepdims=True) * x[:m]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x[n - m :] = 0.95 * x[:m] + np.sqrt(1 - 0.95**2) * noise
    cfg = EmbedConfig(threshold=0.9)
    t0 = time.perf_counter()
    i, j, _, stats = ivf_pairs(x, cfg)
    t_ivf = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth = set()
    for s in range(0, n, 2048):
        sims = x[s : s + 2048] @ x.T
        r, c = np.nonzero(sims >= cfg.threshold)
        keep = r + s < c
        truth |= set(zip((r[keep] + s).tolist(), c[keep].tolist()))
    t_brute = time.perf_counter() - t0
    found = set(zip(i.tolist(), j.tolist()))
    return {"n": n, "dim": d, "ivf_s": round(t_ivf, 2), "brute_force_s": round(t_brute, 2),
            "speedup": round(t_brute / t_ivf, 1), "recall": round(len(found & truth) / max(1, len(truth)), 4),
            "pairs": len(truth), "cells": stats["cells"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--subset", type=int, default=20_000, help="captions for the datasketch comparison")
    ap.add_argument("--exact-subset", type=int, default=10_000, help="captions for the exact all-pairs recall")
    ap.add_argument("--ivf", type=int, default=0, help="vectors for the embedding-index check (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    for n in args.sizes:
        for short in (False, True):
            t0 = time.perf_counter()
            res, sample = run_size(n, args.dup_fraction, args.seed, short)
            print(f"\n== {n:,} {res['set']} captions ({args.dup_fraction:.0%} planted variants; "
                  f"{time.perf_counter() - t0:.0f} s in all, generation included) | read CSV {res['read_s']} s")
            for name in METHODS:
                r = res[name]
                print(f"{name:>14}: select {r['select_s']} s ({n / r['select_s']:,.0f} captions/s) | recall "
                      f"{r['recall']:.4f} {r['recall_by_kind']} | precision {r['precision']:.4f} | removed "
                      f"{r['removed']:,} | index {r['index']}")
            print(f"time default / 3-grams alone: {res['time_ratio']}")
            if n == args.sizes[0] and not short:
                b = baselines(sample, min(args.subset, n), min(args.exact_subset, n))
                print(f"-- baselines on the first {b['subset']:,} captions --")
                print(f"datasketch MinHashLSH {b['datasketch_s']} s vs ours {b['ours_s']} s: "
                      f"ours {b['speedup_vs_datasketch']}x faster; recall of {b['planted_near_pairs']} planted near "
                      f"pairs: ours {b['ours_recall_planted']}, datasketch {b['datasketch_recall_planted']}")
                print(f"exact all-pairs Jaccard on {b['exact_subset']:,}: {b['exact_pairs']} pairs >= threshold "
                      f"({b['exact_all_pairs_s']} s); LSH finds {b['lsh_recall_vs_exact']:.4f} of them "
                      f"({b['lsh_s']} s), {b['lsh_false_pairs']} pairs below threshold reported")
    if args.ivf:
        r = ivf_bench(args.ivf)
        print(f"\n== embedding index: {r['n']:,} x {r['dim']} unit vectors, {r['pairs']} pairs >= 0.9 ==")
        print(f"IVF ({r['cells']} cells, 2 probes) {r['ivf_s']} s vs brute force {r['brute_force_s']} s: "
              f"{r['speedup']}x faster, recall {r['recall']:.4f}")


if __name__ == "__main__":
    main()
