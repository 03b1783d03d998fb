"""A pre-screen of generated event videos: a score per video that puts the likely keepers first for the people who
screen them.

Yume-1.5 kept about 4,000 of 10,000 Wan 2.2 event videos after people watched them. The pre-screen does not decide
(unless `auto_reject_below` asks it to); it orders the review pages so that the obvious failures gather at the end
and the likely keepers at the start. Three parts, each in [0, 1]:

- `prescreen_text`: does the video show its event? The text-frame similarity of the CLIP the native VBench
  backend already loads for background consistency (`openai/clip-vit-base-patch32`: its image tower there, its
  text tower here), over up to `max_frames` frames after the start frame (the start frame is the given image, not
  the model's work). The mean cosine is mapped as CLIPScore does (Hessel et al. 2021: 2.5 x max(cos, 0)), capped
  at 1: CLIP's image-text cosines sit around 0.2-0.35, and the map spreads them over the scale.
- `prescreen_start`: does the video stay in the start image's scene? The mean of max(0, cos) between the start
  image's and each frame's CLIP image embedding (VBench's consistency-to-the-first-frame, against the given image).
- `quality_score`: the VBench quality score (`filtering.stage.score_table`, the native backend by default).

`prescreen_score` is their weighted mean (default: equal thirds) over the parts a row has (no start image: no
`prescreen_start`). Every score depends on its video alone, so batches are scored apart and a rerun gives the same
numbers. Frames go through the same VBench CLIP preprocessing as the native backend (`native._transform`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from filtering.native import _load_clip, _middle_indices, _source
from filtering.stage import ScoreConfig, score_table
from filtering.topk import QUALITY
from yume_core.errors import RowError
from yume_core.manifest import FAILED, OK, mark_each, put_column
from yume_core.media import iter_frames, probe_video
from yume_core.model_spec import MODEL_LOAD_LOCK, parse_model_spec

__all__ = ["PRESCREEN_COLUMNS", "PrescreenConfig", "Prescreener", "prescreen_table"]

SCORE, TEXT, START = "prescreen_score", "prescreen_text", "prescreen_start"
PRESCREEN_COLUMNS = (TEXT, START, SCORE)
CLIPSCORE_W = 2.5  # CLIPScore's rescaling of a cosine (Hessel et al. 2021)


@dataclass(frozen=True)
class PrescreenConfig:
    clip_model: str = "openai/clip-vit-base-patch32"  # a hub id, a folder or tiny-random: both towers load from it
    device: str = "cpu"
    max_frames: int = 16  # frames after the start frame that are compared (the middle frame of equal bins)
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # text, start image, quality
    quality: ScoreConfig = field(default_factory=ScoreConfig)  # the VBench quality score (its dimensions, models)
    with_quality: bool = True

    def __post_init__(self):
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {self.max_frames}")
        if len(self.weights) != 3 or min(self.weights) < 0 or not sum(self.weights):
            raise ValueError(f"weights are three numbers >= 0 (text, start image, quality), got {self.weights}")


class Prescreener:
    """CLIP's two towers from one spec; `score(video, text, start_image)` gives (text, start) for one video."""

    def __init__(self, clip_model: str = "openai/clip-vit-base-patch32", device: str = "cpu", max_frames: int = 16):
        spec = parse_model_spec(clip_model)
        self.device, self.max_frames = torch.device(device), max_frames
        self.vision = _load_clip(spec, self.device)
        if spec.is_tiny:
            from filtering.tiny_scorers import tiny_clip_text, tiny_clip_tokenizer

            self.text_model, self.tokenizer = tiny_clip_text(spec.seed), tiny_clip_tokenizer()
        else:
            from transformers import AutoTokenizer, CLIPTextModelWithProjection

            with MODEL_LOAD_LOCK:
                self.text_model = CLIPTextModelWithProjection.from_pretrained(_source(spec), dtype=torch.float32)
                self.tokenizer = AutoTokenizer.from_pretrained(_source(spec))
        self.text_model = self.text_model.to(self.device).eval()

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                max_length=self.text_model.config.max_position_embeddings)
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(self.text_model(**tokens).text_embeds.float(), dim=-1)

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float()
        return F.normalize(self.vision(self.vision.transform(pixels)).float(), dim=-1)

    def frames_after_start(self, path: str) -> np.ndarray:
        """Up to `max_frames` frames after frame 0, the middle frame of equal bins (VBench's sampling)."""
        count = probe_video(path, count_frames=False).frames
        if count < 2:
            raise RowError("too_few_frames", f"{path}: {count} frame(s); the pre-screen needs frames after the start")
        wanted = set((1 + _middle_indices(count - 1, min(self.max_frames, count - 1))).tolist())
        picked = [f for i, f in enumerate(iter_frames(path)) if i in wanted]
        if not picked:
            raise RowError("too_few_frames", f"{path}: no frame after the start decoded")
        return np.stack(picked)

    def score(self, video: str, text: str, start_image: str | None) -> tuple[float, float | None]:
        frames = self.embed_frames(self.frames_after_start(video))
        cos = (frames @ self.embed_text([text])[0]).mean().item()
        text_score = min(1.0, CLIPSCORE_W * max(cos, 0.0))
        if not start_image or not Path(start_image).is_file():
            return text_score, None
        from PIL import Image

        with Image.open(start_image) as img:
            start = self.embed_frames(np.array(img.convert("RGB"))[None])[0]
        return text_score, float((frames @ start).clamp(min=0).mean().item())


_SHARED: dict[tuple, Prescreener] = {}


def prescreener(config: PrescreenConfig) -> Prescreener:
    """One per process and settings: a flow's batches share the loaded towers."""
    key = (config.clip_model, config.device, config.max_frames)
    if key not in _SHARED:
        _SHARED[key] = Prescreener(*key)
    return _SHARED[key]


def prescreen_table(table: pa.Table, config: PrescreenConfig, videos_root: str | Path,
                    scorer: Prescreener | None = None) -> pa.Table:
    """The table with `prescreen_text`, `prescreen_start`, the VBench columns and `quality_score` (with
    `with_quality`) and `prescreen_score` on its ok rows; a video that cannot be read fails with the reason."""
    if config.with_quality:
        table = score_table(table, config.quality, videos_root)
    scorer = scorer or prescreener(config)
    n, root = table.num_rows, Path(videos_root)
    ok = pc.fill_null(pc.equal(table["status"], OK), False).to_pylist()
    paths, texts = table["video_path"].to_pylist(), table["caption"].to_pylist()
    images = table["image_path"].to_pylist() if "image_path" in table.column_names else [None] * n
    text_s, start_s = np.full(n, np.nan), np.full(n, np.nan)
    reasons, messages = [None] * n, [None] * n
    for i in range(n):
        if not ok[i]:
            continue
        image = str(root / images[i]) if images[i] else None  # an absolute path stays as it is
        try:
            t, s = scorer.score(str(root / paths[i]), texts[i] or "", image)
        except RowError as exc:
            reasons[i], messages[i] = exc.reason, exc.message
            continue
        text_s[i] = t
        start_s[i] = np.nan if s is None else s
    table = mark_each(table, reasons, messages, FAILED)
    quality = (table[QUALITY].to_numpy(zero_copy_only=False).astype(np.float64) if QUALITY in table.column_names
               else np.full(n, np.nan))
    parts = np.stack([text_s, start_s, quality])
    weights = np.asarray(config.weights, np.float64)[:, None] * np.isfinite(parts)
    total = weights.sum(axis=0)
    score = np.where(total > 0, (np.nan_to_num(parts) * weights).sum(axis=0) / np.where(total > 0, total, 1), np.nan)
    still = pc.fill_null(pc.equal(table["status"], OK), False).to_numpy(zero_copy_only=False)
    for name, values in ((TEXT, text_s), (START, start_s), (SCORE, np.where(still, score, np.nan))):
        table = put_column(table, pa.field(name, pa.float64()), pa.array(values, pa.float64(),
                                                                         mask=~np.isfinite(values)))
    return table


def auto_reject(table: pa.Table, below: float | None) -> pa.Table:
    """Ok rows whose pre-screen score is under `below` dropped as `prescreen_rejected` (None: nothing is)."""
    if below is None:
        return table
    from yume_core.manifest import DROPPED, mark

    low = pc.fill_null(pc.less(table[SCORE], below), False)
    msg = pc.binary_join_element_wise(pa.scalar("pre-screen score "), pc.cast(pc.round(table[SCORE], 3), pa.string()),
                                      pa.scalar(f" < auto_reject_below {below}; never shown to a person"), "")
    return mark(table, low, DROPPED, "prescreen_rejected", pc.fill_null(msg, ""))
