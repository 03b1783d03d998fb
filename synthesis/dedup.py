"""Near-duplicate captions: normalisation, exact duplicates by hashing, candidate pairs, clusters.

The two methods (`dedup_minhash` for word shingles, `dedup_embed` for sentence embeddings) only differ in how they
propose and score pairs of distinct normalised captions. Everything around them lives here and is shared:

1. Normalise (lowercase, punctuation to spaces, whitespace collapsed) in Arrow kernels, then hash the normalised
   text: captions that only differ by case, punctuation or spacing collapse in O(n) before any pairwise work.
2. A method returns verified pairs (i, j, similarity) between distinct normalised texts.
3. Connected components over those pairs (scipy's csgraph, C speed) give clusters; a chain A~B, B~C puts A and C
   together even when A and C are below the threshold, the usual single-linkage behaviour of LSH dedup. Each
   cluster keeps its first row in input order, so the choice never depends on a seed or on thread timing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# One regex pass: a run of characters other than letters, digits and combining marks that holds anything but a
# plain space (punctuation, tabs, newlines) becomes one space ("well-lit" and "well lit" agree), and so does a run
# of several spaces. Three simpler passes (punctuation, then \s+, then trim) took 3x as long: \s+ rewrites every
# single space of the corpus.
_SEPARATORS = r"[^\p{L}\p{N}\p{M}]*[^\p{L}\p{N}\p{M} ][^\p{L}\p{N}\p{M}]*|  +"


def normalize_captions(captions: pa.Array | pa.ChunkedArray | list) -> pa.Array:
    """Lowercase, punctuation -> space, runs of whitespace -> one space, trimmed; nulls stay null."""
    arr = captions if isinstance(captions, (pa.Array, pa.ChunkedArray)) else pa.array(captions, pa.string())
    out = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(arr), _SEPARATORS, " "))
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def text_ids(texts: pa.Array) -> np.ndarray:
    """Dense int ids of the distinct values, numbered by first appearance (deterministic for a given order)."""
    enc = pc.dictionary_encode(texts)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def first_of_each(ids: np.ndarray) -> np.ndarray:
    """Position of the first occurrence of each id (ids dense from 0, numbered by first appearance)."""
    first = np.full(int(ids.max()) + 1 if ids.size else 0, len(ids), np.int64)
    np.minimum.at(first, ids, np.arange(len(ids)))
    return first


def content_id(text: str, prefix: str = "p") -> str:
    """A short stable id for a text: 16 hex characters of BLAKE2b (64 bits; collisions at 1M rows ~ 3e-8).

    Derived from the text as written (surrounding whitespace stripped), so the same prompt gets the same id in any
    selection, seed or file format, and whatever is generated from it can be found again. No dots or slashes, so
    it can name files and WebDataset keys.
    """
    return prefix + hashlib.blake2b(text.strip().encode("utf-8"), digest_size=8).hexdigest()


def content_ids(texts: list, prefix: str = "p") -> list:
    return [content_id(t, prefix) if t is not None else None for t in texts]


def window_pairs(keys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of items sharing a key, found by sorting: each item pairs with the next `window` items
    of its bucket (the sorted-neighbourhood method).

    Buckets of up to window + 1 items yield all their pairs; a larger bucket (a common phrase, a degenerate band)
    yields O(size x window) pairs instead of O(size^2), which bounds the work on any input. Items are sorted by
    index inside a bucket, so the pairs do not depend on hash values beyond the bucket.
    """
    n = len(keys)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")  # stable: index order inside a bucket
    sk = keys[order]
    firsts, seconds = [], []
    for d in range(1, window + 1):
        same = sk[d:] == sk[:-d]
        if not same.any():
            break
        firsts.append(order[:-d][same])
        seconds.append(order[d:][same])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)


def unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated (i, j) pairs (the same pair found in several bands or cells); sorted by (i, j)."""
    if len(i) == 0:
        return i, j
    code = np.unique(i.astype(np.int64) * n + j.astype(np.int64))
    return code // n, code % n


@dataclass
class Clusters:
    """Clusters of distinct normalised texts.

    `rep[k]`: the representative (smallest index) of text k's cluster; `best[k]`: the highest verified similarity
    of text k to any other text (NaN if it matched none); `pairs`: the verified (i, j, similarity) edges.
    """

    rep: np.ndarray
    best: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_sim: np.ndarray


def cluster(n: int, i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> Clusters:
    """Connected components of the verified-pair graph; each keeps its smallest index as representative."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    best = np.full(n, np.nan)
    if len(i) == 0:
        return Clusters(np.arange(n), best, i, j, sim)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    smallest = np.full(labels.max() + 1, n, np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    s = np.nan_to_num(np.asarray(sim, np.float64), nan=-np.inf)
    best_fill = np.full(n, -np.inf)
    np.maximum.at(best_fill, i, s)
    np.maximum.at(best_fill, j, s)
    best = np.where(np.isfinite(best_fill), best_fill, np.nan)
    return Clusters(smallest[labels], best, i, j, np.asarray(sim, np.float64))


def spread_examples(sim: np.ndarray, k: int) -> np.ndarray:
    """Indices of k pairs spread over the similarity range, lowest first (the borderline ones are the telling ones)."""
    if len(sim) == 0 or k <= 0:
        return np.zeros(0, np.int64)
    order = np.argsort(sim, kind="stable")
    picks = np.unique(np.linspace(0, len(order) - 1, min(k, len(order))).round().astype(np.int64))
    return order[picks]
