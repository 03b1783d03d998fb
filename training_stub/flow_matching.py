"""Rectified flow: x_t = (1 - t) x0 + t noise, the model predicts the velocity noise - x0, sampling integrates it
from t = 1 (noise) to t = 0 with a few Euler steps (Yume-1.5 samples with 4 after distillation)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def sample_timesteps(n: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """`logit_normal`: sigmoid of a standard normal (SD3), most weight at mid noise; `uniform`: U(0, 1)."""
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    raise ValueError(f"unknown timestep sampling {kind!r}")


def noisy(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tt = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - tt) * x0 + tt * noise


def velocity_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor | None = None,
                  per_sample: bool = False):
    """Mean squared error against the target velocity; `mask` [B, T] leaves padded latents out of the mean.
    `per_sample`: (the loss, each sample's own mean [B]) instead of the loss alone."""
    err = (pred.float() - (noise - x0).float()).pow(2)
    if mask is None:
        loss = err.mean()
        return (loss, err.flatten(1).mean(1)) if per_sample else loss
    m = mask.to(err.dtype).view(*mask.shape, *([1] * (err.dim() - 2)))
    cell = err[0, 0].numel()
    loss = (err * m).sum() / (m.sum() * cell).clamp_min(1)
    if not per_sample:
        return loss
    return loss, (err * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * cell).clamp_min(1)


def euler_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """steps + 1 times from 1 to 0; `shift` > 1 spends more steps at high noise (as Wan/SD3 do at high resolution)."""
    t = torch.linspace(1.0, 0.0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


@torch.no_grad()
def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, steps: int,
                 shift: float = 1.0, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from noise at t = 1 down to t = 0; `velocity(x, t[B])`. `on_step(i)` runs after each
    step (the inference check times steps with it)."""
    times = euler_schedule(steps, shift).to(noise.device)
    x = noise
    for i in range(steps):
        t = times[i].expand(noise.shape[0])
        x = x + (times[i + 1] - times[i]) * velocity(x, t).to(x.dtype)
        if on_step is not None:
            on_step(i)
    return x
