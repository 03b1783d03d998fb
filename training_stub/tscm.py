"""TSCM: how a chunk sees its history at a bounded cost (Yume-1.5's joint temporal-spatial-channel memory).

Two paths, both fed from the clean history latents (see `TSCMConfig` for the schedule and why it is bounded):

- temporal-spatial: history latents become tokens in the DiT's self-attention, patchified the coarser the older
  they are. Every coarse patch embedding starts as the finest one interpolated to its size and rescaled, so a
  patch of constant colour embeds to the same token at every rate and the model starts out reading coarse history
  like fine history.
- channel: the whole history, patchified at (8,4,4) into few 96-channel tokens, mixed into the current tokens of
  every block by linear attention, whose cost grows linearly (and slowly) with the history.

`plan` and `token_counts` are plain functions of the history length, so the schedule can be tested and printed
without a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from training_stub.config import TSCMConfig

Patch = tuple[int, int, int]


@dataclass(frozen=True)
class Segment:
    """History latents [start, stop) patchified at `patch` (a temporal patch > 1 merges latents, oldest end padded)."""

    start: int
    stop: int
    patch: Patch

    @property
    def latents(self) -> int:
        return self.stop - self.start

    def tokens(self, latent_size: tuple[int, int]) -> int:
        h, w = latent_size
        pt, ph, pw = self.patch
        return math.ceil(self.latents / pt) * math.ceil(h / ph) * math.ceil(w / pw)


def plan(history_len: int, config: TSCMConfig, fine: Patch = (1, 2, 2)) -> list[Segment]:
    """The temporal-spatial segments of a history of `history_len` latents, oldest first, in `config.mode`."""
    if history_len <= 0:
        return []
    if config.mode == "full":
        return [Segment(0, history_len, fine)]
    if config.mode == "sliding":
        return [Segment(max(0, history_len - config.sliding_window), history_len, fine)]
    first = 1 if config.keep_first else 0
    segments = []
    younger = 0  # ages <= younger are taken by newer tiers
    for max_age, *patch in config.tiers:
        start, stop = max(first, history_len - max_age), history_len - younger
        if stop > start:
            segments.append(Segment(start, stop, tuple(patch)))
        younger = max_age
    if first:
        segments.append(Segment(0, 1, fine))
    return sorted(segments, key=lambda s: s.start)


def channel_tokens(history_len: int, latent_size: tuple[int, int], config: TSCMConfig) -> int:
    if config.mode != "tscm" or history_len <= 0:
        return 0
    return Segment(0, history_len, config.channel_patch).tokens(latent_size)


def token_counts(history_len: int, latent_size: tuple[int, int], config: TSCMConfig | None = None,
                 fine: Patch = (1, 2, 2)) -> dict:
    """Tokens the history costs: `temporal_spatial` (in self-attention), `channel` (linear attention), and the
    per-segment breakdown `segments` as (start, stop, patch, tokens)."""
    config = config or TSCMConfig()
    segments = plan(history_len, config, fine)
    per = [(s.start, s.stop, s.patch, s.tokens(latent_size)) for s in segments]
    return {
        "temporal_spatial": sum(p[-1] for p in per),
        "channel": channel_tokens(history_len, latent_size, config),
        "segments": per,
    }


# ----------------------------------------------------------------------------------------------------------------
# patches


def patchify(x: torch.Tensor, patch: Patch) -> tuple[torch.Tensor, tuple[int, int, int], int]:
    """[B, T, C, H, W] -> ([B, N, C*pt*ph*pw], (nT, nH, nW), temporal padding).

    Sizes that the patch does not divide are padded by replicating edges (time at the oldest end, space at the
    bottom/right), so any frame size and any history length work and a constant region stays constant.
    """
    b, t, c, h, w = x.shape
    pt, ph, pw = patch
    pad_t, pad_h, pad_w = (-t) % pt, (-h) % ph, (-w) % pw
    x = x.transpose(1, 2)  # [B, C, T, H, W]
    if pad_t or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h, pad_t, 0), mode="replicate")
    nt, nh, nw = (t + pad_t) // pt, (h + pad_h) // ph, (w + pad_w) // pw
    x = x.reshape(b, c, nt, pt, nh, ph, nw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, nt * nh * nw, c * pt * ph * pw), (nt, nh, nw), pad_t


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: Patch, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `patchify` for outputs (no temporal padding): [B, N, C*pt*ph*pw] -> [B, T, C, h, w] cropped."""
    b = tokens.shape[0]
    nt, nh, nw = grid
    pt, ph, pw = patch
    c = tokens.shape[-1] // (pt * ph * pw)
    x = tokens.reshape(b, nt, nh, nw, c, pt, ph, pw).permute(0, 1, 5, 4, 2, 6, 3, 7)
    x = x.reshape(b, nt * pt, c, nh * ph, nw * pw)
    return x[..., : size[0], : size[1]]


def patch_coords(times: torch.Tensor, grid: tuple[int, int, int], patch: Patch) -> torch.Tensor:
    """Centre (t, y, x) of every token in latent units, [N, 3]; `times`: the time of each padded latent [nT*pt]."""
    nt, nh, nw = grid
    _, ph, pw = patch
    t = times.reshape(nt, -1).mean(1)
    y = torch.arange(nh, dtype=torch.float32) * ph + (ph - 1) / 2
    x = torch.arange(nw, dtype=torch.float32) * pw + (pw - 1) / 2
    tt, yy, xx = torch.meshgrid(t, y, x, indexing="ij")
    return torch.stack([tt, yy, xx], -1).reshape(-1, 3)


def sincos_3d(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed sinusoidal embedding of continuous (t, y, x) coordinates [..., 3] -> [..., dim].

    Continuous coordinates let tokens of any patch size (centres at half cells) and any frame size share one
    position code; a quarter of the width goes to each spatial axis, the rest to time.
    """
    ds = 2 * (dim // 8)
    dt = dim - 2 * ds
    parts = []
    for axis, d, base in ((0, dt, 1000.0), (1, ds, 100.0), (2, ds, 100.0)):
        half = d // 2
        freqs = base ** (-torch.arange(half, dtype=torch.float32, device=coords.device) / max(half, 1))
        angles = coords[..., axis : axis + 1].float() * freqs
        parts += [angles.sin(), angles.cos()]
    out = torch.cat(parts, -1)
    return F.pad(out, (0, dim - out.shape[-1]))


class PatchEmbed(nn.Module):
    """A linear map of (pt, ph, pw) patches, stored as a Conv3d-shaped kernel [D, C, pt, ph, pw]."""

    def __init__(self, channels: int, dim: int, patch: Patch):
        super().__init__()
        self.patch = tuple(patch)
        self.weight = nn.Parameter(torch.empty(dim, channels, *self.patch))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.xavier_uniform_(self.weight.view(dim, -1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int], int]:
        patches, grid, pad_t = patchify(x, self.patch)
        return F.linear(patches, self.weight.flatten(1), self.bias), grid, pad_t

    @torch.no_grad()
    def init_from(self, fine: PatchEmbed) -> PatchEmbed:
        """Interpolate `fine`'s kernel to this patch size and rescale by the volume ratio.

        Linear interpolation by an integer factor (edges clamped) preserves a kernel's mean, so after the rescale the
        kernel's sum over a patch, and with it the embedding of a constant patch, equals the fine one's.
        """
        kernel = F.interpolate(fine.weight.float(), size=self.patch, mode="trilinear", align_corners=False)
        volume = math.prod(fine.patch) / math.prod(self.patch)
        self.weight.copy_(kernel * volume)
        self.bias.copy_(fine.bias)
        return self


def patch_key(patch: Sequence[int]) -> str:
    return "x".join(str(int(p)) for p in patch)


# ----------------------------------------------------------------------------------------------------------------
# history encoding


@dataclass
class EncodedHistory:
    """A batch's history, padded: temporal-spatial tokens (already embedded, positions added) and channel tokens.
    Masks are None when no sample was padded."""

    tokens: torch.Tensor  # [B, Nh, D]
    mask: torch.Tensor | None  # [B, Nh] bool, True = real token
    channel: torch.Tensor | None  # [B, M, channel_dim] (M may be 0); None outside tscm mode
    channel_mask: torch.Tensor | None
    fusion_states: list | None = None  # per block: the history's linear-attention state (`ChannelFusion`)


def relative_times(history_len: int, chunk_start: int) -> torch.Tensor:
    """Time of each history latent relative to the chunk's first latent: history[0] is the clip's first latent (at
    -chunk_start); the others are the latents right before the chunk (-1 the newest), per the data contract."""
    t = torch.arange(history_len, dtype=torch.float32) - history_len
    if history_len:
        t[0] = -float(chunk_start)
    return t


def _padded_times(times: torch.Tensor, pad: int) -> torch.Tensor:
    if not pad:
        return times
    return torch.cat([times[0] - torch.arange(pad, 0, -1, dtype=times.dtype), times])


class HistoryEncoder(nn.Module):
    """Embeds histories for the DiT: the finest patch embedder (which the current chunk uses too), coarse ones
    initialised from it, and a (8,4,4) -> `channel_dim` compressor for the channel path."""

    def __init__(self, channels: int, width: int, fine: Patch, config: TSCMConfig):
        super().__init__()
        self.config = config
        self.fine = PatchEmbed(channels, width, fine)  # also embeds the current chunk: one token space
        self.width = width
        patches = {tuple(t[1:]) for t in config.tiers} - {self.fine.patch}
        self.coarse = nn.ModuleDict(
            {patch_key(p): PatchEmbed(channels, width, p).init_from(self.fine) for p in sorted(patches)}
        )
        # which rate a token came from; zero so the interpolated initialisation is exact at step 0
        self.rate_keys = [patch_key(self.fine.patch)] + list(self.coarse)
        self.rate = nn.Parameter(torch.zeros(len(self.rate_keys), width))
        self.channel = PatchEmbed(channels, config.channel_dim, config.channel_patch)

    def _embedder(self, patch: Patch) -> PatchEmbed:
        return self.fine if tuple(patch) == self.fine.patch else self.coarse[patch_key(patch)]

    def temporal_spatial(self, history: torch.Tensor, chunk_start: int, mode: str) -> torch.Tensor:
        """One history [T, C, h, w] -> its tokens [N, D] with positions and rate embeddings added."""
        cfg = self.config if mode == self.config.mode else _mode(self.config, mode)
        times = relative_times(history.shape[0], chunk_start)
        out = []
        for seg in plan(history.shape[0], cfg, self.fine.patch):
            emb = self._embedder(seg.patch)
            tokens, grid, pad = emb(history[None, seg.start : seg.stop])
            coords = patch_coords(_padded_times(times[seg.start : seg.stop], pad), grid, seg.patch)
            pos = sincos_3d(coords.to(history.device), self.width).to(tokens.dtype)
            out.append(tokens[0] + pos + self.rate[self.rate_keys.index(patch_key(seg.patch))])
        if not out:
            return history.new_zeros(0, self.width)
        return torch.cat(out)

    def channel_path(self, history: torch.Tensor, chunk_start: int) -> torch.Tensor:
        """One history -> its compressed channel tokens [M, channel_dim] with positions added."""
        if history.shape[0] == 0:
            return history.new_zeros(0, self.config.channel_dim)
        tokens, grid, pad = self.channel(history[None])
        times = _padded_times(relative_times(history.shape[0], chunk_start), pad)
        coords = patch_coords(times, grid, self.config.channel_patch).to(history.device)
        return tokens[0] + sincos_3d(coords, self.config.channel_dim).to(tokens.dtype)

    def forward(self, histories: Sequence[torch.Tensor], chunk_starts: Sequence[int], mode: str | None = None
                ) -> EncodedHistory:
        mode = mode or self.config.mode
        ts = [self.temporal_spatial(h, s, mode) for h, s in zip(histories, chunk_starts)]
        tokens, mask = pad_batch(ts)
        channel = channel_mask = None
        if mode == "tscm":  # fusion runs even without history (then over the current tokens), as it does in a batch
            channel, channel_mask = pad_batch([self.channel_path(h, s) for h, s in zip(histories, chunk_starts)])
        return EncodedHistory(tokens, mask, channel, channel_mask)


def _mode(config: TSCMConfig, mode: str) -> TSCMConfig:
    return replace(config, mode=mode)


def pad_batch(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[N_i, D] tensors -> [B, max N, D] and a mask (None when all lengths are equal, so attention takes its fast
    unmasked path)."""
    lengths = [s.shape[0] for s in seqs]
    padded = nn.utils.rnn.pad_sequence(list(seqs), batch_first=True)
    if len(set(lengths)) <= 1:
        return padded, None
    mask = torch.arange(padded.shape[1], device=padded.device)[None] < torch.tensor(lengths, device=padded.device)[:, None]
    return padded, mask


# ----------------------------------------------------------------------------------------------------------------
# channel fusion


class ChannelFusion(nn.Module):
    """After cross-attention: down-project the current tokens to `dim`, concatenate with the compressed history,
    mix by linear attention (elu+1 features, O(N)), keep the current tokens' outputs, project up.

    Linear attention sums keys x values over the sequence, so the history's share of that sum (`history_state`)
    is computed once per chunk and reused by every sampling step: a step then costs the same however long the
    history is. The up-projection starts at zero, so a fresh model trains like a plain DiT and learns how much
    history to mix in.
    """

    def __init__(self, width: int, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.down = nn.Linear(width, dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.up = nn.Linear(dim, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def _keys_values(self, seq: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over tokens of phi(k) v^T [B, H, d, d] and of phi(k) [B, H, d], masked tokens left out."""
        b, n, dim = seq.shape
        k, v = self.kv(seq).float().view(b, n, 2, self.heads, dim // self.heads).unbind(2)
        k = F.elu(k) + 1
        if mask is not None:
            k = k * mask[:, :, None, None]
        return torch.einsum("bnhd,bnhe->bhde", k, v), k.sum(1)

    def history_state(self, history: torch.Tensor, history_mask: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._keys_values(history.to(self.kv.weight.dtype), history_mask)

    def forward(self, cur: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None,
                cur_mask: torch.Tensor | None) -> torch.Tensor:
        b, nc, _ = cur.shape
        seq = self.down(cur)
        dim = seq.shape[-1]
        kv, ksum = self._keys_values(seq, cur_mask)
        if state is not None:
            kv, ksum = kv + state[0], ksum + state[1]
        q = F.elu(self.q(seq).float().view(b, nc, self.heads, dim // self.heads)) + 1
        z = torch.einsum("bnhd,bhd->bnh", q, ksum)
        out = torch.einsum("bnhd,bhde->bnhe", q, kv) / (z[..., None] + 1e-6)
        return self.up(out.reshape(b, nc, dim).to(cur.dtype))
