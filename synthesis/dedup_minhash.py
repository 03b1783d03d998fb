"""Lexical near-duplicates: MinHash over word shingles, LSH banding, exact Jaccard on the candidates.

The offline default of prompt selection: it needs no model, and it finds what a caption corpus repeats (the same
caption re-cased or re-punctuated, a word changed, a clause added). All hot paths are NumPy/Arrow over a chunk of
captions at once, never a Python loop per caption:

- words: Arrow splits the normalised texts; each chunk's distinct words get global integer ids (a dict lookup per
  distinct word of the chunk, not per word occurrence);
- shingles: every window of `shingle` consecutive word ids mixed into one 64-bit value (a caption shorter than
  that is one shingle);
- signatures: `bands x rows` multiply-shift hashes ((a*x + b) mod 2^64) >> 32 of every shingle, one hash function
  at a time over a chunk's shingles, reduced per caption with `np.minimum.reduceat`; only the band keys are kept,
  not the signatures (8 bytes x bands per caption: 184 MB at 1M captions);
- candidates: captions sharing a band key, paired by sorting (`dedup.window_pairs`, bounded on big buckets);
- verification: the exact Jaccard similarity of the candidates' shingle sets, computed for all pairs at once by
  sorting (pair, shingle) keys, so a reported pair is a real one and the threshold means what it says.

Why word 3-grams and Jaccard >= 0.7 by default: OpenVid captions are long (tens to a hundred-plus words) and
formulaic ("The video shows ...", "in the background"); single words or bigrams make unrelated captions of the same
style overlap, 3-grams do not, while one changed word in a 25-word caption still leaves Jaccard 0.77.
The band count and width are chosen from the threshold (see `lsh_params`).

Short captions (at most `short_words`, default 20 words) are also paired, exactly, when they differ by one word
inserted, deleted or replaced (`one_word_edits`): there one changed word leaves 3-gram Jaccard under 0.7 (0.33 at 8
words), and looser measures (word sets, lower thresholds) flood the LSH with captions of the same template (word
sets: 16x the candidate pairs and 6.7x the time on 20,000 generated short captions, with false matches). Measured
(BENCHMARKS.md): recall 1.000 and precision 1.000 on one-word edits of 8-20-word captions, 1.34x the time of
3-grams alone on 1M of them, 1.005x on 1M long ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synthesis.dedup import unique_pairs, window_pairs

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PAD = np.uint64(0xFFFFFFFFFFFFFFFF)  # stands for "no word" past the end of a short caption


@dataclass(frozen=True)
class MinHashConfig:
    threshold: float = 0.7  # Jaccard similarity of word-shingle sets at or above which two captions are duplicates
    shingle: int = 3  # words per shingle
    short_words: int = 20  # texts of at most this many words also pair when one word apart (0: never; see
    # one_word_edits): below ~20 words one changed word leaves word 3-grams under the threshold
    num_perm: int = 128  # hash functions available for the bands (bands x rows <= num_perm)
    hash_seed: int = 1  # seeds the hash functions; fixed so results do not depend on the sampling seed
    window: int = 16  # pairs per item inside one LSH bucket (see dedup.window_pairs)
    chunk: int = 4096  # captions hashed together; measured fastest (fits the cache better than 16k or 64k)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.98) -> tuple[int, int]:
    """(bands, rows) minimising the weighted area of false positives below the threshold and false negatives above.

    A pair with Jaccard s becomes a candidate with probability 1 - (1 - s^rows)^bands. False positives only cost a
    verification (cheap, exact), false negatives lose a duplicate for good, hence the heavy weight on the latter:
    at 0.98 a pair exactly at a threshold of 0.7 is a candidate with probability 0.985 (23 bands of 5 rows), one at
    Jaccard 0.2 with probability 0.007.
    """
    s_lo = np.linspace(0.0, threshold, 200)
    s_hi = np.linspace(threshold, 1.0, 200)
    best, best_cost = (1, 1), np.inf
    for rows in range(1, num_perm + 1):
        for bands in range(1, num_perm // rows + 1):
            fp = np.trapezoid(1 - (1 - s_lo**rows) ** bands, s_lo)
            fn = np.trapezoid((1 - s_hi**rows) ** bands, s_hi)
            cost = (1 - fn_weight) * fp + fn_weight * fn
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


class ShingleHasher:
    """Word k-gram hashes, with word ids shared across chunks (so the same shingle hashes alike everywhere)."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError("shingle size must be >= 1")
        self.k = k
        self.vocab: dict[str, int] = {}

    def word_ids(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths): one uint64 per word occurrence (the same word, the same id in every chunk), grouped by
        text, and each text's word count. Texts must be normalised and non-empty (one space between words)."""
        words = pc.split_pattern(texts, " ")
        lengths = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
        enc = pc.dictionary_encode(pc.list_flatten(words))
        local = enc.indices.to_numpy(zero_copy_only=False)
        vocab = self.vocab
        mapping = np.fromiter(
            (vocab.setdefault(w, len(vocab)) for w in enc.dictionary.to_pylist()), np.uint64, len(enc.dictionary)
        )
        return _mix(mapping[local] + _GOLDEN), lengths

    def __call__(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, owner): one uint64 per shingle and the index of the text it came from, grouped by text.

        Texts must be normalised and non-empty (one space between words).
        """
        ids, lengths = self.word_ids(texts)
        n_words = len(ids)
        starts = np.zeros(len(lengths), np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        ends = starts + lengths
        owner_of_word = np.repeat(np.arange(len(lengths)), lengths)
        pos = np.arange(n_words)
        end = ends[owner_of_word]
        k = self.k
        # a window starting at each word that has k - 1 words after it in the same text; a shorter text is one
        # window from its first word, padded
        keep = (pos + k <= end) | ((pos == starts[owner_of_word]) & (lengths[owner_of_word] < k))
        h = ids.copy()
        padded = np.concatenate([ids, np.full(k, _PAD, np.uint64)])
        for d in range(1, k):
            nxt = np.where(pos + d < end, padded[pos + d], _PAD)
            h = _mix(h * _GOLDEN ^ nxt)
        return h[keep], owner_of_word[keep]


def band_keys(hashes: np.ndarray, owner: np.ndarray, n: int, bands: int, rows: int, seed: int) -> np.ndarray:
    """(n, bands) uint64: each text's MinHash signature, folded band by band into one key per band."""
    rng = np.random.default_rng(seed)
    num = bands * rows
    a = rng.integers(1, 2**63, num, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, num, dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    if len(starts) != n:
        raise ValueError("every text needs at least one shingle")
    keys = np.zeros((n, bands), np.uint64)
    buf = np.empty_like(hashes)
    # one hash function at a time over the whole chunk: a 1-D multiply, add, shift and segment-min in place is
    # faster than a (shingles x functions) block, whose strided reduce thrashes the cache
    for f in range(num):
        np.multiply(hashes, a[f], out=buf)
        buf += b[f]
        buf >>= np.uint64(32)
        band = f // rows
        keys[:, band] = _mix(keys[:, band] ^ np.minimum.reduceat(buf, starts))
    return keys


def candidate_pairs(keys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of texts that share at least one band key, each pair once."""
    n = keys.shape[0]
    found_i, found_j = [], []
    for band in range(keys.shape[1]):
        i, j = window_pairs(keys[:, band], window)
        found_i.append(i)
        found_j.append(j)
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return unique_pairs(np.concatenate(found_i), np.concatenate(found_j), n)


def shingle_sets(texts: pa.Array, hasher: ShingleHasher) -> tuple[np.ndarray, np.ndarray]:
    """CSR of each text's distinct shingle hashes, sorted: (ptr (n + 1,), values)."""
    h, owner = hasher(texts)
    order = np.lexsort((h, owner))
    h, owner = h[order], owner[order]
    new = np.r_[True, (h[1:] != h[:-1]) | (owner[1:] != owner[:-1])]
    h, owner = h[new], owner[new]
    ptr = np.zeros(len(texts) + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=len(texts)), out=ptr[1:])
    return ptr, h


def _segments(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of CSR rows `rows`, and which of `rows` each position belongs to."""
    lengths = ptr[rows + 1] - ptr[rows]
    which = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.zeros(len(rows), np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return ptr[rows][which] + (np.arange(lengths.sum()) - offsets[which]), which


def exact_jaccard(ptr: np.ndarray, values: np.ndarray, u: np.ndarray, v: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """Jaccard similarity of the shingle sets of rows u[p] and v[p] for every p, vectorised over pairs."""
    sizes = ptr[1:] - ptr[:-1]
    out = np.empty(len(u), np.float64)
    cum = np.cumsum(sizes[u] + sizes[v])
    start = 0
    while start < len(u):
        done = cum[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cum, done + chunk, side="right")))
        su, sv = u[start:stop], v[start:stop]
        pu, wu = _segments(ptr, su)
        pv, wv = _segments(ptr, sv)
        which = np.concatenate([wu, wv])
        vals = np.concatenate([values[pu], values[pv]])
        order = np.lexsort((vals, which))
        which, vals = which[order], vals[order]
        both = (which[1:] == which[:-1]) & (vals[1:] == vals[:-1])
        inter = np.bincount(which[1:][both], minlength=stop - start)
        union = sizes[su] + sizes[sv] - inter
        out[start:stop] = inter / np.maximum(union, 1)
        start = stop
    return out


def minhash_pairs(texts: pa.Array, cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Verified near-duplicate pairs (i, j, jaccard) among distinct normalised non-empty texts, and run figures."""
    n = len(texts)
    bands, rows = lsh_params(cfg.threshold, cfg.num_perm)
    hasher = ShingleHasher(cfg.shingle)
    keys = np.empty((n, bands), np.uint64)
    for c0 in range(0, n, cfg.chunk):
        part = texts.slice(c0, cfg.chunk)
        h, owner = hasher(part)
        keys[c0 : c0 + len(part)] = band_keys(h, owner, len(part), bands, rows, cfg.hash_seed)
    ci, cj = candidate_pairs(keys, cfg.window)
    stats = {"bands": bands, "rows_per_band": rows, "candidate_pairs": len(ci), "verified_pairs": 0}
    i = j = np.zeros(0, np.int64)
    sim = np.zeros(0)
    if len(ci):
        involved, inverse = np.unique(np.concatenate([ci, cj]), return_inverse=True)
        ptr, values = shingle_sets(texts.take(pa.array(involved)), ShingleHasher(cfg.shingle))
        sim = exact_jaccard(ptr, values, inverse[: len(ci)], inverse[len(ci) :])
        keep = sim >= cfg.threshold
        stats["verified_pairs"] = int(keep.sum())
        i, j, sim = ci[keep], cj[keep], sim[keep]
    if cfg.short_words:
        ei, ej, esim = one_word_edits(texts, cfg.short_words, cfg.window)
        stats["one_word_edit_pairs"] = len(ei)
        i, j, sim = _union(n, (i, j, sim), (ei, ej, esim))
    return i, j, sim, stats


def one_word_edits(texts: pa.Array, max_words: int, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of texts of at most `max_words` words that differ by one word inserted, deleted or replaced, with the
    Jaccard similarity of their word sets.

    Why: in a short caption one changed word breaks most 3-grams (8 words: Jaccard 0.33), and word sets alone make
    unrelated captions of one template look alike. Exact instead: every text gets the key of its word sequence and
    one key per word left out (a polynomial hash, so each key is a sum over prefix and suffix: vectorised, O(words));
    two texts one edit apart share a key (a replaced word left out of both, or an inserted one out of the longer).
    Keys are 64-bit: a false match between ~20M keys has odds of about 1e-5.
    """
    words = pc.add(pc.count_substring(texts, " "), 1).to_numpy(zero_copy_only=False)
    short = np.flatnonzero(words <= max_words)
    if len(short) < 2:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    ids, lengths = ShingleHasher(1).word_ids(texts.take(pa.array(short)))
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    owner = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(ids)) - starts[owner]
    base = _GOLDEN | np.uint64(1)  # odd, so it has an inverse modulo 2^64
    powers = np.cumprod(np.r_[np.uint64(1), np.full(int(lengths.max()), base, np.uint64)], dtype=np.uint64)
    inverse = np.uint64(pow(int(base), -1, 1 << 64))
    term = ids * powers[pos]
    before = np.cumsum(term) - term  # sum of the terms before each word, from the start of the array
    before -= before[starts][owner]  # ... from the start of its text
    total = np.add.reduceat(term, starts)
    left_out = before + (total[owner] - before - term) * inverse
    keys = _mix(np.concatenate([total, left_out]))
    key_owner = np.concatenate([np.arange(len(lengths)), owner])
    a, b = window_pairs(keys, window)
    a, b = key_owner[a], key_owner[b]
    apart = a != b
    a, b = unique_pairs(np.minimum(a, b)[apart], np.maximum(a, b)[apart], len(lengths))
    involved, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    ptr, values = shingle_sets(texts.take(pa.array(short[involved])), ShingleHasher(1))
    return short[a], short[b], exact_jaccard(ptr, values, inverse[: len(a)], inverse[len(a) :])


def _union(n: int, *found: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs found by several passes once each, with the highest similarity any pass measured."""
    i = np.concatenate([f[0] for f in found])
    j = np.concatenate([f[1] for f in found])
    sim = np.concatenate([f[2] for f in found])
    code = i.astype(np.int64) * n + j
    order = np.lexsort((-sim, code))
    first = order[np.r_[True, code[order][1:] != code[order][:-1]]] if len(order) else order
    return i[first], j[first], sim[first]
