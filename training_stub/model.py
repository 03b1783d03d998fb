"""A small DiT for rectified flow over latent chunks, with text cross-attention and TSCM memory of the history.

Tokens are [history | current chunk]: the history (see `tscm`) enters self-attention as clean tokens with timestep 0,
the current chunk as noisy tokens with the sampled timestep, so each token gets its own adaLN modulation. Every
block is: modulated self-attention -> cross-attention to the text (event caption + action phrases) -> TSCM channel
fusion (current tokens only) -> modulated MLP. adaLN gates, the channel up-projection and the output layer start at
zero (adaLN-Zero), so the untrained model predicts zero velocity and every branch is learned from the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from training_stub.config import ModelConfig
from training_stub.tscm import (
    ChannelFusion,
    EncodedHistory,
    HistoryEncoder,
    pad_batch,
    patch_coords,
    sincos_3d,
    unpatchify,
)


class Attention(nn.Module):
    """Multi-head attention (self, or cross to `context`) with RMS-normalised queries and keys (stable under bf16)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.cross = context_dim is not None
        if self.cross:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(context_dim, 2 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim)
        self.k_norm = nn.RMSNorm(self.head_dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, context: torch.Tensor | None = None):
        b, n, d = x.shape
        if self.cross:
            q = self.q(x).view(b, n, self.heads, self.head_dim)
            k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, self.head_dim).unbind(2)
        else:
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).unbind(2)
        # norms in float32 (under bf16 autocast too), attention in the activations' dtype
        q, k = self.q_norm(q.float()).to(v.dtype), self.k_norm(k.float()).to(v.dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, channel_dim: int, channel_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross = Attention(dim, heads, context_dim=dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.fusion = ChannelFusion(dim, channel_dim, channel_heads)
        self.norm4 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, nh: int, c_hist, c_cur, mask, context, context_mask, fusion_state, cur_mask):
        mods = _per_token(self.modulation(F.silu(c_hist)), self.modulation(F.silu(c_cur)), nh, x.shape[1] - nh)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods.chunk(6, -1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1, mask)
        x = x + self.cross(self.norm2(x), context_mask, context)
        if fusion_state is not None:
            cur = x[:, nh:]
            cur = cur + self.fusion(self.norm3(cur), fusion_state, cur_mask)
            x = torch.cat([x[:, :nh], cur], 1)
        return x + gate2 * self.mlp(self.norm4(x) * (1 + scale2) + shift2)


def _per_token(mod_hist: torch.Tensor, mod_cur: torch.Tensor, nh: int, nc: int) -> torch.Tensor:
    """[B, K] modulations of the history (timestep 0) and of the current chunk -> [B, nh + nc, K]."""
    return torch.cat([mod_hist[:, None].expand(-1, nh, -1), mod_cur[:, None].expand(-1, nc, -1)], 1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = 1000.0 * t.float()[:, None] * freqs
        return self.mlp(torch.cat([angles.cos(), angles.sin()], -1))


class WorldDiT(nn.Module):
    """Predicts the rectified-flow velocity of a noisy chunk [B, T, C, h, w] given its history and text."""

    def __init__(self, config: ModelConfig, channels: int, text_dim: int):
        super().__init__()
        if text_dim < 1:
            raise ValueError("text_dim must be set (the text encoder's width)")
        self.config, self.channels, self.text_dim = config, channels, text_dim
        dim, tscm = config.width, config.tscm
        self.history = HistoryEncoder(channels, dim, config.patch, tscm)
        self.time_embed = TimestepEmbedder(dim)
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"),
                                       nn.Linear(dim, dim))
        # always-present context token: the whole context when text is dropped (guidance), never an empty key set
        self.null_text = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, config.heads, config.mlp_ratio, tscm.channel_dim, tscm.channel_heads) for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(dim, 2 * dim)
        self.final = nn.Linear(dim, channels * math.prod(config.patch))
        for layer in (self.final_modulation, self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_history(self, histories: Sequence[torch.Tensor], chunk_starts: Sequence[int],
                       mode: str | None = None) -> EncodedHistory:
        """Once per chunk: the history does not change across sampling steps (nor, then, its tokens and each
        block's linear-attention state)."""
        encoded = self.history(histories, chunk_starts, mode)
        if encoded.channel is not None:
            encoded.fusion_states = [b.fusion.history_state(encoded.channel, encoded.channel_mask) for b in self.blocks]
        return encoded

    def encode_text(self, contexts: Sequence[torch.Tensor], drop: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample text tokens [L_i, text_dim] -> ([B, 1 + max L, D], key mask); `drop` [B] bool keeps only the
        null token of those samples (classifier-free guidance)."""
        null = self.null_text.to(self.text_proj[1].weight.dtype)
        tokens = [torch.cat([null, self.text_proj(c.to(null.device))]) if c.shape[0] else null for c in contexts]
        context, mask = pad_batch(tokens)
        if drop is not None and bool(drop.any()):
            if mask is None:
                mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            mask = mask.clone()
            mask[drop.to(mask.device), 1:] = False
        return context, mask

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, history: EncodedHistory, context: torch.Tensor,
                context_mask: torch.Tensor | None = None, chunk_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`chunk_mask` [B, T] marks real latents when chunks of different lengths share a batch (padding at the end)."""
        b, frames, _, h, w = x_t.shape
        cur, grid, _ = self.history.fine(x_t)
        coords = patch_coords(torch.arange(frames, dtype=torch.float32), grid, self.config.patch).to(x_t.device)
        cur = cur + sincos_3d(coords, self.config.width).to(cur.dtype)
        cur_mask = None
        if chunk_mask is not None and not bool(chunk_mask.all()):
            cur_mask = chunk_mask.to(x_t.device).repeat_interleave(grid[1] * grid[2], dim=1)
        nh = history.tokens.shape[1]
        x = torch.cat([history.tokens.to(cur.dtype), cur], 1)
        mask = _join_masks(history.mask, nh, cur_mask, cur.shape[1], b, x.device)
        c_cur = self.time_embed(t)
        c_hist = self.time_embed(torch.zeros_like(t))
        states = history.fusion_states or [None] * len(self.blocks)
        for block, state in zip(self.blocks, states):
            x = block(x, nh, c_hist, c_cur, mask, context, context_mask, state, cur_mask)
        shift, scale = self.final_modulation(F.silu(c_cur))[:, None].chunk(2, -1)
        out = self.final(self.final_norm(x[:, nh:]) * (1 + scale) + shift)
        return unpatchify(out, grid, self.config.patch, (h, w))


def _join_masks(hist_mask, nh, cur_mask, nc, b, device):
    if hist_mask is None and cur_mask is None:
        return None
    hm = hist_mask if hist_mask is not None else torch.ones(b, nh, dtype=torch.bool, device=device)
    cm = cur_mask if cur_mask is not None else torch.ones(b, nc, dtype=torch.bool, device=device)
    return torch.cat([hm, cm], 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
