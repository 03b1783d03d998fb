"""Semantic near-duplicates: sentence embeddings, an inverted-file index in NumPy, exact cosine on the candidates.

The production option of prompt selection (`method="embedding"`): paraphrases that share few word 3-grams still
land close in a sentence-embedding space. Two parts:

- `SentenceEncoder`: any transformers encoder checkpoint (hub id or directory, e.g.
  `sentence-transformers/all-MiniLM-L6-v2`) with attention-masked mean pooling and L2 normalisation, which is
  how sentence-transformers models are meant to be pooled; `tiny-random[:seed]` builds a 2-layer random BERT over
  the offline character tokenizer (`yume_core.tiny_text`) so the code path runs in tests without a download.
  Captions are encoded in batches sorted by length (little padding), on CUDA when there is one.
- `ivf_pairs`: an IVF index (what FAISS calls IVF-Flat), written with NumPy matrix products so it needs no extra
  dependency (neither faiss nor hnswlib is a dependency here): spherical k-means on a sample picks ~sqrt(n) cells,
  every vector is filed under its `probes` nearest cells, and only vectors sharing a cell are compared, exactly,
  with blocked matrix products. Work is ~n*sqrt(n)*d instead of n^2*d (at 1M x 384: ~4e11 multiply-adds, BLAS
  speed, instead of 4e14). Filing each vector under two cells catches pairs that straddle a cell border; a pair
  at cosine >= 0.9 sits far closer than cells are wide, so misses are rare (the tests measure recall).
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass

import numpy as np

from synthesis.dedup import unique_pairs
from yume_core.model_spec import parse_model_spec

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbedConfig:
    model: str = DEFAULT_MODEL
    threshold: float = 0.9  # cosine similarity at or above which two captions are duplicates
    batch_size: int = 256
    max_length: int = 256  # tokens per caption (MiniLM was trained on 256)
    device: str = "auto"  # auto: cuda when available
    cells: int = 0  # IVF cells; 0: about sqrt(number of captions)
    probes: int = 2  # cells each vector is filed under
    kmeans_iters: int = 10
    kmeans_sample: int = 65536  # vectors the cells are fitted on
    index_seed: int = 0  # k-means initialisation; fixed, independent of the sampling seed


class SentenceEncoder:
    """Text -> unit vectors with a transformers encoder and mean pooling (see the module docstring)."""

    def __init__(self, spec: str, device: str = "auto", max_length: int = 256):
        import torch

        parsed = parse_model_spec(spec)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.max_length = max_length
        if parsed.is_tiny:
            self.tokenizer, self.model = _tiny_bert(parsed.seed)
        else:
            from transformers import AutoModel, AutoTokenizer

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(parsed.spec)
                self.model = AutoModel.from_pretrained(parsed.spec).eval()
            except OSError as exc:  # not in the cache on an offline node, no such repo, no weights in the folder
                raise ValueError(
                    f"cannot load the sentence-embedding model {spec!r} ({exc}); on an offline machine fill the "
                    "Hugging Face cache first or give a local checkpoint directory"
                ) from None
        if self.device.startswith("cuda"):
            self.model = self.model.half()
        self.model.to(self.device)
        limit = getattr(self.model.config, "max_position_embeddings", max_length) or max_length
        self.max_length = min(max_length, limit)
        # what the tokenizer returns but the model does not take (token_type_ids for some) is left out
        self._inputs = set(inspect.signature(self.model.forward).parameters)

    def encode(self, texts: list[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        for s in tqdm(starts, desc="embedding", unit="batch", leave=False, disable=not progress):
            idx = order[s : s + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**{k: v for k, v in batch.items() if k in self._inputs}).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out


def _tiny_bert(seed: int):
    import torch
    from transformers import BertConfig, BertModel

    from yume_core.tiny_text import tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    return tokenizer, model.eval()


def spherical_kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """k unit centroids of unit vectors x (cosine k-means); an emptied cell is re-seeded from a random point."""
    c = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        labels = np.argmax(x @ c.T, axis=1)
        order = np.argsort(labels, kind="stable")
        present, starts = np.unique(labels[order], return_index=True)
        sums = np.add.reduceat(x[order], starts, axis=0)
        c[present] = sums
        empty = np.setdiff1d(np.arange(k), present)
        if len(empty):
            c[empty] = x[rng.choice(len(x), len(empty), replace=False)]
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return c


def ivf_pairs(emb: np.ndarray, cfg: EmbedConfig, block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Pairs (i, j, cosine), i < j, with cosine >= cfg.threshold among unit vectors `emb` (see module docstring)."""
    n = len(emb)
    if n < 2:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), {"cells": 0}
    rng = np.random.default_rng(cfg.index_seed)
    k = min(n, cfg.cells or max(1, round(n**0.5)))
    probes = min(cfg.probes, k)
    sample = emb if n <= cfg.kmeans_sample else emb[np.sort(rng.choice(n, cfg.kmeans_sample, replace=False))]
    centroids = spherical_kmeans(sample, k, cfg.kmeans_iters, rng)
    cell_of = np.empty((n, probes), np.int64)
    for s in range(0, n, block):
        scores = emb[s : s + block] @ centroids.T
        cell_of[s : s + block] = np.argpartition(-scores, probes - 1, axis=1)[:, :probes]
    members = np.repeat(np.arange(n), probes)
    cells = cell_of.ravel()
    order = np.lexsort((members, cells))
    members, cells = members[order], cells[order]
    bounds = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1], True])
    found_i, found_j = [], []
    compared = 0
    for a, b in itertools.pairwise(bounds):
        idx = members[a:b]
        if len(idx) < 2:
            continue
        vecs = emb[idx]
        for r in range(0, len(idx), block):
            sims = vecs[r : r + block] @ vecs.T
            compared += sims.size
            rows, cols = np.nonzero(sims >= cfg.threshold)
            keep = rows + r < cols  # upper triangle: each pair once, never a vector with itself
            found_i.append(idx[rows[keep] + r])
            found_j.append(idx[cols[keep]])
    stats = {"cells": int(k), "probes": int(probes), "similarities_computed": int(compared)}
    if not found_i:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0), stats
    i, j = unique_pairs(np.concatenate(found_i), np.concatenate(found_j), n)
    sim = np.einsum("ij,ij->i", emb[i], emb[j]).astype(np.float64)
    keep = sim >= cfg.threshold  # float32 products in other orders can differ in the last bit
    stats["verified_pairs"] = int(keep.sum())
    return i[keep], j[keep], sim[keep], stats


def embedding_pairs(texts: list[str], cfg: EmbedConfig, progress: bool = False):
    """Encode `texts` with cfg.model and return ivf_pairs over them (i, j, cosine, stats)."""
    encoder = SentenceEncoder(cfg.model, cfg.device, cfg.max_length)
    emb = encoder.encode(texts, cfg.batch_size, progress=progress)
    i, j, sim, stats = ivf_pairs(emb, cfg)
    stats["embedding_dim"] = int(emb.shape[1])
    stats["device"] = encoder.device
    return i, j, sim, stats
