"""The TSCM DiT: history token schedule, interpolated patch embeddings, masking of mixed-length batches, modes."""

import dataclasses
import math

import pytest
import torch

from training_stub.config import ModelConfig, TSCMConfig, load_config
from training_stub.flow_matching import euler_sample, noisy, velocity_loss
from training_stub.model import WorldDiT
from training_stub.tscm import (
    ChannelFusion,
    PatchEmbed,
    patchify,
    plan,
    token_counts,
    unpatchify,
)

TSCM = TSCMConfig()  # tiers: ages 1-2 at (1,2,2), 3-8 at (1,4,4), 9-16 at (1,8,8), 17-32 at (4,8,8)
GRID = (8, 8)


def _model(mode="tscm", width=32, depth=2, channels=12, seed=0, randomize=True, **tscm):
    cfg = ModelConfig(width=width, depth=depth, heads=2, tscm=dataclasses.replace(TSCM, mode=mode, **tscm))
    torch.manual_seed(seed)
    model = WorldDiT(cfg, channels, text_dim=8)
    if randomize:  # leave the zero initialisation so every branch (gates, fusion, output) shows in the output
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() > 0 and float(p.abs().sum()) == 0.0:
                    p.normal_(0, 0.05)
    return model.eval()


# ------------------------------------------------------------------------------------------------ schedule


def test_token_counts_by_history_length_hand_checked():
    # 33 latents: the first at (1,2,2) = 16; ages 17-32 (latents 1-16) in 4 groups of (4,8,8) = 4;
    # ages 9-16 at (1,8,8) = 8; ages 3-8 at (1,4,4) = 6 * 4; ages 1-2 at (1,2,2) = 2 * 16
    c = token_counts(33, GRID, TSCM)
    assert [s[:3] for s in c["segments"]] == [
        (0, 1, (1, 2, 2)), (1, 17, (4, 8, 8)), (17, 25, (1, 8, 8)), (25, 31, (1, 4, 4)), (31, 33, (1, 2, 2))]
    assert [s[3] for s in c["segments"]] == [16, 4, 8, 24, 32]
    assert c["temporal_spatial"] == 84
    assert c["channel"] == math.ceil(33 / 8) * 2 * 2  # (8,4,4) patches of an 8x8 grid
    assert token_counts(0, GRID, TSCM) == {"temporal_spatial": 0, "channel": 0, "segments": []}
    assert token_counts(1, GRID, TSCM)["temporal_spatial"] == 16  # just the first frame
    # 5 latents: first + ages 3-4 at (1,4,4) + ages 1-2 fine
    assert token_counts(5, GRID, TSCM)["temporal_spatial"] == 16 + 2 * 4 + 2 * 16


def test_temporal_spatial_tokens_saturate_while_full_context_grows():
    counts = {n: token_counts(n, GRID, TSCM)["temporal_spatial"] for n in range(1, 300)}
    assert all(counts[n] <= counts[n + 1] for n in range(1, 299))
    assert {counts[n] for n in range(33, 300)} == {84}  # bounded from 32 history latents (+ the first) on
    full = dataclasses.replace(TSCM, mode="full")
    sliding = dataclasses.replace(TSCM, mode="sliding", sliding_window=8)
    for n in (1, 9, 33, 129, 257):
        assert token_counts(n, GRID, full) == {"temporal_spatial": 16 * n, "channel": 0, "segments": [(0, n, (1, 2, 2), 16 * n)]}
        assert token_counts(n, GRID, sliding)["temporal_spatial"] == 16 * min(n, 8)
    # the channel path alone keeps growing, slowly: one (8,4,4) token column per 8 latents
    assert token_counts(257, GRID, TSCM)["channel"] == 33 * 4
    # without keep_first the first latent ages out like any other
    assert plan(100, dataclasses.replace(TSCM, keep_first=False))[0].start == 100 - 32


@pytest.mark.parametrize("mode", ["tscm", "full", "sliding"])
@pytest.mark.parametrize("grid", [(8, 8), (6, 10), (3, 5)])
def test_encoded_history_matches_token_counts_for_any_grid(mode, grid):
    model = _model(mode, randomize=False)
    for n in (0, 1, 6, 21, 40):
        enc = model.encode_history([torch.randn(n, 12, *grid)], [n], mode)
        counts = token_counts(n, grid, model.config.tscm if mode == "tscm" else dataclasses.replace(TSCM, mode=mode))
        assert enc.tokens.shape == (1, counts["temporal_spatial"], 32)
        if mode == "tscm":
            assert enc.channel.shape == (1, counts["channel"], TSCM.channel_dim)
        else:
            assert enc.channel is None


def test_config_rejects_bad_tiers_and_modes():
    from yume_core.config import ConfigError

    with pytest.raises(ConfigError, match="mode"):
        TSCMConfig(mode="nope")
    with pytest.raises(ConfigError, match="increasing"):
        TSCMConfig(tiers=((8, 1, 2, 2), (2, 1, 4, 4)))
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config("cpu", {"model": {"tscm": {"tier": []}}})
    cfg = load_config("cpu", {"model": {"tscm": {"tiers": [[4, 1, 2, 2], [12, 2, 4, 4]]}}})
    assert cfg.model.tscm.tiers == ((4, 1, 2, 2), (12, 2, 4, 4))


# ------------------------------------------------------------------------------------------------ patches


def test_patchify_round_trips_and_pads_any_size():
    x = torch.randn(2, 3, 5, 7, 9)
    tokens, grid, pad = patchify(x, (1, 2, 2))
    assert grid == (3, 4, 5) and pad == 0 and tokens.shape == (2, 60, 20)
    assert torch.equal(unpatchify(tokens, grid, (1, 2, 2), (7, 9)), x)
    tokens, grid, pad = patchify(x, (4, 8, 8))  # 3 latents -> one temporal patch, oldest end replicated
    assert grid == (1, 1, 2) and pad == 1
    assert torch.equal(tokens.view(2, 2, 5, 4, 8, 8)[:, 0, :, 0], tokens.view(2, 2, 5, 4, 8, 8)[:, 0, :, 1])


@pytest.mark.parametrize("patch", [(1, 4, 4), (1, 8, 8), (4, 8, 8), (2, 4, 4)])
def test_coarse_patch_embedding_is_the_interpolated_fine_one(patch):
    torch.manual_seed(0)
    fine = PatchEmbed(12, 32, (1, 2, 2))
    torch.nn.init.normal_(fine.bias)
    coarse = PatchEmbed(12, 32, patch).init_from(fine)
    # a constant patch (any colour per channel) embeds to the same token at every rate
    colour = torch.randn(12)
    const = colour.view(1, 1, 12, 1, 1).expand(1, patch[0], 12, patch[1], patch[2])
    fine_token = fine(colour.view(1, 1, 12, 1, 1).expand(1, 1, 12, 2, 2))[0][0, 0]
    torch.testing.assert_close(coarse(const)[0][0, 0], fine_token, rtol=1e-4, atol=1e-5)
    # and it is an interpolation of the fine kernel, not a constant: spatial structure survives
    w = coarse.weight[:, :, 0]
    assert not torch.allclose(w[..., 0, 0], w[..., -1, -1])
    corner = fine.weight[:, :, 0, 0, 0] * 4 / math.prod(patch)  # edge cells copy the fine corner, rescaled
    torch.testing.assert_close(w[..., 0, 0], corner, rtol=1e-4, atol=1e-6)


def test_a_fresh_model_reads_coarse_history_like_fine_history():
    # the model's own coarse embedders start from its finest one: a constant history latent gives the same token
    # (before positions) whichever tier it falls in
    model = _model(randomize=False)
    hist = model.history
    colour = torch.randn(12)
    latent = colour.view(1, 1, 12, 1, 1).expand(1, 4, 12, 8, 8)
    fine = hist.fine(latent[:, :1])[0][0, 0]
    for emb in hist.coarse.values():
        torch.testing.assert_close(emb(latent[:, : emb.patch[0]])[0][0, 0], fine, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ the model


def test_fresh_model_predicts_zero_and_output_has_the_chunk_shape():
    model = _model(randomize=False)
    x = torch.randn(2, 3, 12, 6, 10)  # odd chunk length and a grid the patches do not divide
    enc = model.encode_history([torch.randn(9, 12, 6, 10), torch.randn(1, 12, 6, 10)], [9, 1])
    ctx, mask = model.encode_text([torch.randn(5, 8), torch.randn(0, 8)])
    out = model(x, torch.rand(2), enc, ctx, mask)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the untrained model is the identity flow


@pytest.mark.parametrize("mode", ["tscm", "full", "sliding"])
def test_mixed_batch_equals_each_sample_alone(mode):
    """Padding of histories, text and chunks is masked out: a batch gives each sample what it gets alone."""
    model = _model(mode)
    torch.manual_seed(1)
    hists = [torch.randn(n, 12, 8, 8) for n in (0, 5, 23)]
    chunks = torch.randn(3, 4, 12, 8, 8)
    lengths = [4, 2, 3]
    chunk_mask = torch.arange(4)[None] < torch.tensor(lengths)[:, None]
    texts = [torch.randn(n, 8) for n in (3, 0, 7)]
    t = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        enc = model.encode_history(hists, [len(h) for h in hists])
        ctx, cmask = model.encode_text(texts)
        batch = model(chunks, t, enc, ctx, cmask, chunk_mask)
        for i in range(3):
            enc_i = model.encode_history(hists[i : i + 1], [len(hists[i])])
            ctx_i, cmask_i = model.encode_text(texts[i : i + 1])
            alone = model(chunks[i : i + 1, : lengths[i]], t[i : i + 1], enc_i, ctx_i, cmask_i)
            torch.testing.assert_close(batch[i, : lengths[i]], alone[0], rtol=1e-4, atol=1e-5)


def test_history_and_text_reach_the_prediction():
    model = _model()
    x, t = torch.randn(1, 4, 12, 8, 8), torch.tensor([0.5])
    hist = torch.randn(40, 12, 8, 8)
    with torch.no_grad():
        ctx, mask = model.encode_text([torch.randn(4, 8)])
        base = model(x, t, model.encode_history([hist], [40]), ctx, mask)
        # the oldest latents are outside the temporal-spatial path: only the channel path can carry them
        older = hist.clone()
        older[1:5] += 3
        changed = model(x, t, model.encode_history([older], [40]), ctx, mask)
        assert not torch.allclose(base, changed)
        for block in model.blocks:
            block.fusion.up.weight.zero_()
            block.fusion.up.bias.zero_()
        torch.testing.assert_close(model(x, t, model.encode_history([hist], [40]), ctx, mask),
                                   model(x, t, model.encode_history([older], [40]), ctx, mask))
        # dropping the text (guidance) leaves only the null token, and the prediction changes
        enc = model.encode_history([hist], [40])
        ctx_d, mask_d = model.encode_text([torch.randn(4, 8)], drop=torch.tensor([True]))
        assert mask_d.tolist() == [[True, False, False, False, False]]
        assert not torch.allclose(model(x, t, enc, ctx, mask), model(x, t, enc, ctx_d, mask_d))


def test_channel_fusion_is_linear_attention_over_history_and_current_tokens():
    torch.manual_seed(0)
    fusion = ChannelFusion(16, 8, 2)
    torch.nn.init.normal_(fusion.up.weight)
    cur, hist = torch.randn(1, 5, 16), torch.randn(1, 7, 8)
    out = fusion(cur, fusion.history_state(hist, None), None)
    # reference: softmax-free attention with elu+1 features over [history | current], queries = current tokens
    down = fusion.down(cur)
    seq = torch.cat([hist, down], 1)
    k, v = fusion.kv(seq).view(1, 12, 2, 2, 4).unbind(2)
    q = torch.nn.functional.elu(fusion.q(down).view(1, 5, 2, 4)) + 1
    scores = torch.einsum("bnhd,bmhd->bhnm", q, torch.nn.functional.elu(k) + 1)
    ref = torch.einsum("bhnm,bmhd->bnhd", scores / scores.sum(-1, keepdim=True), v).reshape(1, 5, 8)
    torch.testing.assert_close(out, fusion.up(ref), rtol=1e-4, atol=1e-5)
    # a masked history token changes nothing
    padded = torch.cat([hist, torch.randn(1, 3, 8)], 1)
    hmask = torch.tensor([[True] * 7 + [False] * 3])
    torch.testing.assert_close(fusion(cur, fusion.history_state(padded, hmask), None), out, rtol=1e-5, atol=1e-6)
    # the state is a fixed-size summary: [B, heads, d, d] and [B, heads, d] for any history length
    kv, ksum = fusion.history_state(torch.randn(1, 300, 8), None)
    assert kv.shape == (1, 2, 4, 4) and ksum.shape == (1, 2, 4)


def test_rectified_flow_sampler_integrates_the_true_velocity_exactly():
    x0 = torch.randn(2, 3, 4)
    noise = torch.randn(2, 3, 4)
    t = torch.tensor([0.0, 1.0])
    x_t = noisy(x0, noise, t)
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], noise[1])
    # a straight path has constant velocity: Euler with any step count lands on x0
    out = euler_sample(lambda x, tt: noise - x0, noise, steps=3)
    torch.testing.assert_close(out, x0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pred = (noise - x0).clone()
    pred[0, 2] += 5  # padded latents do not count
    pred[1, 1:] += 5
    assert float(velocity_loss(pred, x0, noise, mask)) == 0.0
    assert float(velocity_loss(pred, x0, noise)) > 0
