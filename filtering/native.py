"""VBench's four model-light quality dimensions, computed in-process with the project's own torch and transformers.

Why: the `vbench` package pins old numpy/transformers and must run in its own environment; these four dimensions
need only a ViT or two and a few lines of arithmetic, so they run here at full speed on the GPU nodes (and with
tiny random-weight models in tests and the demo). The formulas and the preprocessing follow VBench's source
(github.com/Vchitect/VBench, `vbench/subject_consistency.py`, `background_consistency.py`,
`temporal_flickering.py`, `aesthetic_quality.py`, `utils.py`) so that scores land on the scale its leaderboard's
normalisation (`filtering.dimensions.NORMALIZE`) expects:

- `subject_consistency`: DINO ViT-B/16 (VBench loads `facebookresearch/dino:main` `dino_vitb16` through torch.hub:
  the CLS token after the final norm; here `ViTModel`'s `last_hidden_state[:, 0]`, no pooler). Frames go through
  VBench's `dino_transform(224)`: torchvision `Resize(224)` (shorter side to 224, longer side truncated to
  int(224 * long / short), bilinear, antialias off) and no crop, /255, ImageNet mean/std. Non-square frames need
  the position embeddings interpolated: DINO's own way (bicubic, scale factors (n + 0.1) / sqrt(N)) rather than
  transformers' (exact target size), since that is what VBench's hub model runs.
- `background_consistency`: CLIP ViT-B/32 `encode_image` (= `CLIPVisionModelWithProjection`'s `image_embeds`) after
  VBench's `clip_transform(224)`: `Resize(224)` bicubic without antialias, `CenterCrop(224)`, /255, CLIP mean/std.
- Both: features L2-normalised; for every frame i >= 1, (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2;
  the video's score is the mean over i >= 1.
- `temporal_flickering`: no model; the mean absolute difference between consecutive frames (all pixels and
  channels, 0-255), m, averaged over the pairs; score (255 - m) / 255.
- `aesthetic_quality`: CLIP ViT-L/14 embeddings, L2-normalised in float32, through LAION's linear head
  (`sa_0_4_vit_l_14_linear.pth`, 768 -> 1), divided by 10 and averaged over frames.

VBench reads every frame (decord) and so does this backend (PyAV, `yume_core.media`); the image size comes from the
model's config (224 for the real checkpoints, VBench's constant) and mean/std are VBench's constants.

Deviations, all small: frames are decoded by PyAV rather than decord/OpenCV (FFmpeg underneath both; colour
conversion may differ by a code value here and there); VBench runs its OpenAI CLIP models in float16 on a GPU, this
backend runs every model in float32; frames go through the models in batches (VBench: DINO one frame at a time),
which changes results only by float rounding; flickering sums absolute differences exactly in integers (VBench
averages float32 means). `max_frames` (off by default, as in VBench) feeds the models only that many frames, the
middle frame of each of `max_frames` equal bins (VBench's own `get_frame_indices(..., sample="middle")`), found
from the container's frame count; temporal flickering still compares every pair of consecutive frames, because
flicker between frames far apart is not flicker and costs nothing beyond the decoding done anyway.
"""

from __future__ import annotations

import itertools
import math
import types
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModelWithProjection, ViTModel

from filtering.dimensions import check_dimensions
from filtering.scorer import VideoScores
from filtering.tiny_scorers import tiny_aesthetic_head, tiny_clip_vision, tiny_dino
from yume_core.errors import RowError
from yume_core.media import iter_frames, probe_video
from yume_core.model_spec import MODEL_LOAD_LOCK, ModelSpec, parse_model_spec

__all__ = ["NATIVE_DIMENSIONS", "NativeScorer"]

NATIVE_DIMENSIONS = ("subject_consistency", "background_consistency", "temporal_flickering", "aesthetic_quality")

# VBench's dino_transform and clip_transform constants.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

LAION_HEAD = "sa_0_4_vit_l_14_linear.pth"
LAION_HEAD_URL = "https://github.com/LAION-AI/aesthetic-predictor/raw/main/" + LAION_HEAD


class NativeScorer:
    """Scores videos on VBench's subject/background consistency, temporal flickering and aesthetic quality.

    Model arguments are model specs (`yume_core.model_spec`); only the models of the requested dimensions load.
    `aesthetic_head` is the path of LAION's linear head, required with a real aesthetic model (a tiny-random one
    gets a seeded random head). `workers` videos are scored at once on threads: decoding one (FFmpeg, the GIL
    released) overlaps the others' model calls, so a GPU does not wait on a single decoder. `frame_batch` frames of
    a video are decoded and sent through each model at a time, so memory stays bounded on long clips. See the module
    docstring for the formulas and `max_frames`.
    """

    def __init__(
        self,
        dimensions: Iterable[str] = NATIVE_DIMENSIONS,
        dino_model: str = "facebook/dino-vitb16",
        clip_model: str = "openai/clip-vit-base-patch32",
        aesthetic_model: str = "openai/clip-vit-large-patch14",
        aesthetic_head: str | Path | None = None,
        device: str = "cpu",
        frame_batch: int = 64,
        max_frames: int | None = None,
        workers: int = 4,
    ):
        self.dimensions = _native_dimensions(dimensions)
        if frame_batch < 1:
            raise ValueError(f"frame_batch must be at least 1, got {frame_batch}")
        if max_frames is not None and max_frames < 2:
            raise ValueError(f"max_frames must be at least 2 (the consistency scores compare frames), got {max_frames}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.frame_batch, self.max_frames = frame_batch, max_frames
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="score-video")
        given = {"subject_consistency": dino_model, "background_consistency": clip_model,
                 "aesthetic_quality": aesthetic_model}
        specs = {dim: parse_model_spec(given[dim]) for dim in self.dimensions if dim in given}
        head_path = _check_head(specs.get("aesthetic_quality"), aesthetic_head)
        self._device = torch.device(device)
        self._encoders = {dim: _ENCODER_LOADERS[dim](spec, self._device) for dim, spec in specs.items()}
        self._head = None
        if "aesthetic_quality" in specs:
            width = self._encoders["aesthetic_quality"].model.config.projection_dim
            self._head = _load_head(head_path, specs["aesthetic_quality"], width).to(self._device)
        self._closed = False

    def score(self, items: Iterable[tuple[str, str | Path]]) -> list[VideoScores]:
        """One VideoScores per `(key, video_path)`, in input order; a bad video gets a reason, the rest go on."""
        if self._closed:
            raise RuntimeError("NativeScorer is closed")
        return list(self._pool.map(lambda item: self._score_video(*item), items))

    def close(self) -> None:
        """Drop the models, so a long-lived process (a flow worker) gets its GPU memory back."""
        self._pool.shutdown()
        self._encoders, self._head, self._closed = {}, None, True
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self) -> NativeScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------------

    def _score_video(self, key: str, path: str | Path) -> VideoScores:
        try:
            video = self._measure(path)
        except RowError as e:  # media's reasons: video_missing, video_unreadable, video_truncated
            return VideoScores(key, reason=e.reason, error=e.message)
        if video.compared < 2:
            return VideoScores(key, reason="too_few_frames", error=(
                f"{path}: only {video.compared} frame(s) to score; VBench's dimensions compare frames and need at "
                "least 2. Re-render or re-encode the video."))
        return VideoScores(key, scores={dim: self._reduce(dim, video) for dim in self.dimensions})

    def _measure(self, path: str | Path) -> _Video:
        keep = self._kept_indices(path)
        video = _Video(set(self._encoders), "temporal_flickering" in self.dimensions)
        with torch.inference_mode():
            for chunk in _chunks(iter_frames(path), self.frame_batch):
                picked = chunk if keep is None else chunk[_within(keep, video.decoded, len(chunk))]
                video.add_frames(chunk)
                if len(picked):
                    on_device = torch.from_numpy(picked).to(self._device)
                    video.add_features(_encode(self._encoders, on_device), len(picked))
        return video

    def _kept_indices(self, path: str | Path) -> np.ndarray | None:
        """The frames the models see, or None for all: with `max_frames`, from the header's count (exact for mp4;
        a header that overstates it loses tail bins, one without a count means all frames)."""
        if self.max_frames is None:
            return None
        count = probe_video(path, count_frames=False).frames
        return None if count <= self.max_frames else _middle_indices(count, self.max_frames)

    def _reduce(self, dim: str, video: _Video) -> float:
        if dim == "temporal_flickering":
            return video.flicker.score()
        features = torch.cat(video.features[dim])
        if dim == "aesthetic_quality":
            with torch.inference_mode():
                scores = self._head(F.normalize(features.float(), dim=-1, p=2)).squeeze(-1) / 10
            return float(scores.double().mean())
        return _consistency(features)


def _native_dimensions(dimensions: Iterable[str]) -> tuple[str, ...]:
    dims = check_dimensions(dimensions)
    other = [d for d in dims if d not in NATIVE_DIMENSIONS]
    if other:
        raise ValueError(
            f"the native backend does not compute {', '.join(other)} (VBench's own models for them need its "
            f"environment); score them with the `vbench` backend. Native: {', '.join(NATIVE_DIMENSIONS)}"
        )
    return dims


def _check_head(spec: ModelSpec | None, head: str | Path | None) -> Path | None:
    """Refuses a real aesthetic model without its head before anything loads (a download would be wasted)."""
    if spec is None:
        return None
    if head is None:
        if spec.is_tiny:
            return None
        raise ValueError(
            f"aesthetic_quality with {spec.spec!r} needs LAION's linear aesthetic head: download {LAION_HEAD} from "
            f"{LAION_HEAD_URL} (VBench caches it as ~/.cache/vbench/aesthetic_model/emb_reader/{LAION_HEAD}) and "
            "pass its path as aesthetic_head"
        )
    path = Path(head).expanduser()
    if not path.is_file():
        raise ValueError(f"aesthetic_head {str(head)!r} is not a file; give the path of {LAION_HEAD}")
    return path


# ----------------------------------------------------------------------------------------------------------------
# models


class _Encoder:
    """A model behind the frame transform VBench puts in front of it: uint8 (t, H, W, 3) frames -> (t, D).

    `transform` is a `partial` of `_transform`; encoders whose keywords match (both CLIPs) share one transformed
    chunk, since resizing full-resolution frames in float costs more than a small ViT's forward pass."""

    def __init__(self, model: torch.nn.Module, transform: partial, forward):
        self.model, self.transform, self._forward = model, transform, forward

    @property
    def transform_key(self) -> tuple:
        return tuple(sorted(self.transform.keywords.items()))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._forward(self.model, pixels)


def _encode(encoders: dict[str, _Encoder], frames: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every encoder's features of one chunk, each distinct transform computed once."""
    floats = frames.permute(0, 3, 1, 2).float()
    pixels: dict[tuple, torch.Tensor] = {}
    out = {}
    for dim, encoder in encoders.items():
        key = encoder.transform_key
        if key not in pixels:
            pixels[key] = encoder.transform(floats)
        out[dim] = encoder(pixels[key])
    return out


def _source(spec: ModelSpec) -> str:
    return str(Path(spec.spec).expanduser()) if spec.kind == "path" else spec.spec


def _load_dino(spec: ModelSpec, device: torch.device) -> _Encoder:
    if spec.is_tiny:
        model = tiny_dino(spec.seed)
    else:
        with MODEL_LOAD_LOCK:
            model = ViTModel.from_pretrained(_source(spec), add_pooling_layer=False, dtype=torch.float32)
    model.embeddings.interpolate_pos_encoding = types.MethodType(_dino_pos_encoding, model.embeddings)
    size = model.config.image_size
    transform = partial(_transform, size=size, mode="bilinear", crop=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return _Encoder(model.to(device).eval(), transform, _dino_forward)


def _load_clip(spec: ModelSpec, device: torch.device) -> _Encoder:
    if spec.is_tiny:
        model = tiny_clip_vision(spec.seed)
    else:
        with MODEL_LOAD_LOCK:
            model = CLIPVisionModelWithProjection.from_pretrained(_source(spec), dtype=torch.float32)
    size = model.config.image_size
    transform = partial(_transform, size=size, mode="bicubic", crop=True, mean=CLIP_MEAN, std=CLIP_STD)
    return _Encoder(model.to(device).eval(), transform, _clip_forward)


_ENCODER_LOADERS = {"subject_consistency": _load_dino, "background_consistency": _load_clip,
                    "aesthetic_quality": _load_clip}


def _dino_forward(model: ViTModel, pixels: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]


def _clip_forward(model: CLIPVisionModelWithProjection, pixels: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixels).image_embeds


def _load_head(path: Path | None, spec: ModelSpec, width: int) -> torch.nn.Linear:
    if path is None:
        return tiny_aesthetic_head(width, spec.seed)
    state = torch.load(path, map_location="cpu", weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else None
    if shapes != {"weight": (1, width), "bias": (1,)}:
        raise ValueError(f"aesthetic head {path}: expected a state dict with weight [1, {width}] and bias [1] (a "
                         f"linear head over this CLIP's {width}-d embeddings, like {LAION_HEAD}), got {shapes}")
    head = torch.nn.Linear(width, 1)
    head.load_state_dict(state)
    return head.eval()


def _dino_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """DINO's position-embedding interpolation, bound onto transformers' ViTEmbeddings in place of its own.

    VBench's hub DINO resamples the 14x14 grid with `scale_factor=(rows + 0.1) / 14` (DINO's guard against
    floating-point error), where transformers asks for the exact target size: the bicubic sampling positions
    differ, and so would the features of every non-square frame.
    """
    positions = self.position_embeddings
    grid_len = positions.shape[1] - 1
    if embeddings.shape[1] - 1 == grid_len and height == width:
        return positions
    side, dim = int(math.sqrt(grid_len)), positions.shape[-1]
    rows, cols = height // self.patch_size + 0.1, width // self.patch_size + 0.1
    grid = positions[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=(rows / side, cols / side), mode="bicubic", align_corners=False)
    return torch.cat((positions[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


# ----------------------------------------------------------------------------------------------------------------
# VBench's preprocessing and formulas


def _transform(x: torch.Tensor, size: int, mode: str, crop: bool, mean, std) -> torch.Tensor:
    """VBench's dino_transform / clip_transform on float (t, 3, H, W) frames in 0-255: its load_video hands
    torchvision float32 tensors, so resizing happens in float with no rounding or clamping."""
    x = _resize_shorter_side(x, size, mode)
    if crop:
        x = _center_crop(x, size)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean_t) / std_t


def _resize_shorter_side(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision's `Resize(size, antialias=False)` on a tensor: the shorter side becomes `size`, the longer
    int(size * long / short)."""
    height, width = x.shape[-2:]
    longer = int(size * max(height, width) / min(height, width))
    target = (size, longer) if height <= width else (longer, size)
    if target == (height, width):
        return x
    return F.interpolate(x, size=target, mode=mode, align_corners=False, antialias=False)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's CenterCrop offsets (round half to even), for frames at least `size` on both sides."""
    top = round((x.shape[-2] - size) / 2.0)
    left = round((x.shape[-1] - size) / 2.0)
    return x[..., top:top + size, left:left + size]


def _consistency(features: torch.Tensor) -> float:
    """Subject/background consistency of one video from its (T, D) frame features (see the module docstring)."""
    f = F.normalize(features.float(), dim=-1, p=2)
    to_previous = F.cosine_similarity(f[1:], f[:-1], dim=-1).clamp(min=0.0)
    to_first = F.cosine_similarity(f[1:], f[:1], dim=-1).clamp(min=0.0)
    return float(((to_previous + to_first) / 2).double().mean())


class _Flicker:
    """Temporal flickering over a stream of chunks: integer sums of |frame_i - frame_{i-1}|, the last frame of
    each chunk carried into the next so that pairs across chunk borders count too."""

    def __init__(self):
        self.total = self.count = 0
        self._last: np.ndarray | None = None

    def add(self, chunk: np.ndarray) -> None:
        frames = chunk if self._last is None else np.concatenate([self._last[None], chunk])
        diffs = np.abs(np.diff(frames.astype(np.int16), axis=0))
        self.total += int(diffs.sum(dtype=np.int64))
        self.count += diffs.size
        self._last = chunk[-1]

    def score(self) -> float:
        return (255.0 - self.total / self.count) / 255.0


class _Video:
    """What one video's frames leave behind: counts, per-model features (small: T x D) and flicker sums."""

    def __init__(self, model_dims: set[str], flicker: bool):
        self.features: dict[str, list[torch.Tensor]] = {dim: [] for dim in model_dims}
        self.flicker = _Flicker() if flicker else None
        self.decoded = self.kept = 0

    def add_frames(self, chunk: np.ndarray) -> None:
        if self.flicker is not None:
            self.flicker.add(chunk)
        self.decoded += len(chunk)

    def add_features(self, features: dict[str, torch.Tensor], frames: int) -> None:
        for dim, values in features.items():
            self.features[dim].append(values)
        self.kept += frames

    @property
    def compared(self) -> int:
        """Frames every requested score saw (the models may see fewer than were decoded, with `max_frames`)."""
        return min(self.decoded, self.kept) if self.features else self.decoded


def _chunks(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Stack a frame stream into (t, H, W, 3) arrays of at most `size` frames."""
    while chunk := list(itertools.islice(frames, size)):
        yield np.stack(chunk)


def _middle_indices(count: int, wanted: int) -> np.ndarray:
    """VBench's `get_frame_indices(wanted, count, sample="middle")`: the middle frame of each of `wanted` bins."""
    edges = np.linspace(0, count, wanted + 1).astype(int)
    return (edges[:-1] + edges[1:] - 1) // 2


def _within(indices: np.ndarray, start: int, length: int) -> np.ndarray:
    """The sorted `indices` that fall in [start, start + length), as offsets into that range."""
    return indices[(indices >= start) & (indices < start + length)] - start
