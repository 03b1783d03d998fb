"""A fixed latent space for frames: what stands in for Wan's VAE so the TSCM stub trains on a CPU.

Nothing here is learned. Frames are resized to `height x width` (cover, then centre crop: the frame's aspect is kept
and the overflow cut on the long side), normalised per channel to roughly zero mean and unit variance, and
pixel-unshuffled by `patch` (each `patch x patch` block of RGB pixels becomes `3 * patch**2` channels of one latent
cell). The time axis follows Wan's causal VAE: latent 0 is frame 0 alone, and latent j >= 1 is the mean of frames
1 + (j - 1) * temporal .. j * temporal, so 1 + 4k frames give 1 + k latents. Frames after the last whole group are
not encoded. Decoding inverts the spatial part exactly (up to uint8 rounding) and repeats each latent over its
frames, so `decode(encode(x))` is a blurred-in-time copy of `x`: good enough to look at what a model produced.

The latent grid has the shape a small DiT expects of a VAE latent ([T, C, h, w] with a 16x16 grid at the default
32x32), so the model code is the real code path with a cheaper front end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet's RGB statistics: close to those of outdoor video frames, and fixed, so latents mean the same in every run.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class LatentSpace:
    """A fixed (not learned) map frames <-> latents, so the trainer runs on CPU. Wan-style causal time axis:
    the first frame is its own latent, then every `temporal` frames make one latent (1 + 4k frames -> 1 + k latents)."""

    height: int = 32  # frames are resized to (height, width) (cover + centre crop) before encoding
    width: int = 32
    patch: int = 2  # pixels per latent cell side (pixel-unshuffle after resize)
    temporal: int = 4

    def __post_init__(self):
        for name in ("height", "width", "patch", "temporal"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LatentSpace.{name} must be a positive integer, got {value!r}")
        if self.height % self.patch or self.width % self.patch:
            raise ValueError(
                f"LatentSpace: height {self.height} and width {self.width} must be multiples of patch {self.patch}"
            )

    @property
    def channels(self) -> int:
        return 3 * self.patch * self.patch

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // self.patch, self.width // self.patch

    def num_latents(self, num_frames: int) -> int:
        """Latents of a clip of `num_frames` frames (trailing frames short of a whole group are not encoded)."""
        return 0 if num_frames <= 0 else 1 + (num_frames - 1) // self.temporal

    def num_frames(self, num_latents: int) -> int:
        """Frames that `num_latents` latents stand for (what `decode` returns)."""
        return 0 if num_latents <= 0 else 1 + (num_latents - 1) * self.temporal

    def frame_range(self, first: int, stop: int) -> tuple[int, int]:
        """Frames [start, end] (inclusive) covered by latents first..stop-1 (stop > first)."""
        start = 0 if first == 0 else 1 + (first - 1) * self.temporal
        return start, (stop - 1) * self.temporal

    def resize_size(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) to scale a `width x height` frame to so that it covers the target; crop_frames then cuts the centre.

        Scaling to this size first (in the decoder's scaler, on the whole frame) and cropping after is what lets the
        loader resize while decoding."""
        scale = max(self.width / width, self.height / height)
        return max(self.width, round(width * scale)), max(self.height, round(height * scale))

    def crop_frames(self, frames: np.ndarray) -> np.ndarray:
        """Centre crop of [T, H, W, 3] frames (H >= height, W >= width) to [T, height, width, 3] (a view)."""
        top = (frames.shape[1] - self.height) // 2
        left = (frames.shape[2] - self.width) // 2
        return frames[:, top : top + self.height, left : left + self.width]

    def encode(self, frames) -> torch.Tensor:
        """uint8 [T, H, W, 3] (numpy or torch) -> float32 [T_lat, C, h, w], roughly zero-mean unit-variance.

        Frames of another size than (height, width) are resized here (cover + centre crop, bilinear with
        antialiasing); the loader resizes while decoding instead, which is cheaper."""
        x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames [T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
        n = self.num_latents(x.shape[0])
        if n == 0:
            return torch.zeros((0, self.channels, *self.latent_size))
        x = x[: self.num_frames(n)].permute(0, 3, 1, 2).float().div_(255.0)  # [T, 3, H, W]
        if x.shape[-2:] != (self.height, self.width):
            x = self._resize(x)
        mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
        if n > 1:  # frames 1.. in groups of `temporal`, averaged
            rest = x[1:].reshape(n - 1, self.temporal, 3, self.height, self.width).mean(dim=1)
            x = torch.cat([x[:1], rest])
        return F.pixel_unshuffle(x, self.patch).contiguous()

    def decode(self, latents) -> np.ndarray:
        """float [T_lat, C, h, w] -> uint8 [1 + (T_lat-1)*temporal, height, width, 3]."""
        z = torch.as_tensor(latents).detach().float().cpu()
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.channels, *self.latent_size):
            raise ValueError(
                f"expected latents [T, {self.channels}, {self.latent_size[0]}, {self.latent_size[1]}], "
                f"got {tuple(z.shape)}"
            )
        if z.shape[0] == 0:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        x = F.pixel_shuffle(z, self.patch)  # [T_lat, 3, H, W]
        x = x * torch.tensor(PIXEL_STD).view(1, 3, 1, 1) + torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        x = torch.cat([x[:1], x[1:].repeat_interleave(self.temporal, dim=0)])
        x = (x.clamp_(0.0, 1.0) * 255.0).round_().to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        w, h = self.resize_size(x.shape[-1], x.shape[-2])
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        top, left = (h - self.height) // 2, (w - self.width) // 2
        return x[..., top : top + self.height, left : left + self.width]
