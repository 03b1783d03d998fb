"""The native VBench backend: VBench's formulas and preprocessing, checked against references written out here
independently (per frame, in VBench's loop form) over tiny random-weight models and small generated videos."""

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModelWithProjection, ViTModel

from filtering.native import NATIVE_DIMENSIONS, NativeScorer, _consistency, _dino_pos_encoding
from filtering.tiny_scorers import tiny_aesthetic_head, tiny_clip_vision, tiny_dino
from yume_core.media import read_frames, write_video

TINY = {"dino_model": "tiny-random", "clip_model": "tiny-random", "aesthetic_model": "tiny-random"}
IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
CLIP = (torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1),
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1))
H, W = 48, 64  # non-square, like real videos: DINO sees 32x42 (no crop), CLIP a 32x32 centre crop


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _moving_square(n):
    frames = []
    for i in range(n):
        frame = np.full((H, W, 3), 40, np.uint8)
        frame[10:30, 4 + 5 * i:24 + 5 * i] = (250, 200, 30)
        frames.append(frame)
    return frames


def _video(tmp_path, name, frames):
    path = tmp_path / name
    write_video(path, frames, fps=8, crf=0)
    return str(path)


def _scores(scorer, path):
    (result,) = scorer.score([("k", path)])
    assert result.ok, result.error
    return result.scores


def _pixels(frames, size, mode, mean_std):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=False)
    mean, std = mean_std
    return (x / 255.0 - mean) / std


def _dino_interpolation(self, embeddings, height, width):
    """DINO's vision_transformer.interpolate_pos_encoding, written out in its own terms (dims 2 and 3 as w, h)."""
    npatch, n = embeddings.shape[1] - 1, self.position_embeddings.shape[1] - 1
    if npatch == n and height == width:
        return self.position_embeddings
    w0, h0 = height // self.patch_size + 0.1, width // self.patch_size + 0.1
    patch = self.position_embeddings[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
    assert patch.shape[-2:] == (int(w0), int(h0))
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, patch.shape[1])
    return torch.cat((self.position_embeddings[:, :1], patch), dim=1)


def _vbench_consistency(features):
    """VBench's loop: frame by frame, max(0, cos) to the previous and to the first frame."""
    features = F.normalize(features, dim=-1, p=2)
    total = 0.0
    for i in range(1, len(features)):
        prev = max(0.0, F.cosine_similarity(features[i - 1:i], features[i:i + 1]).item())
        first = max(0.0, F.cosine_similarity(features[0:1], features[i:i + 1]).item())
        total += (prev + first) / 2
    return total / (len(features) - 1)


def _dino_features(frames, seed=0):
    model = tiny_dino(seed)
    model.embeddings.interpolate_pos_encoding = _dino_interpolation.__get__(model.embeddings)
    pixels = _pixels(frames, (32, 42), "bilinear", IMAGENET)  # shorter side 48 -> 32, longer int(32 * 64 / 48)
    with torch.no_grad():  # one frame at a time, as VBench feeds DINO
        return torch.cat([model(pixel_values=p[None], interpolate_pos_encoding=True).last_hidden_state[:, 0]
                          for p in pixels])


def _clip_features(frames, seed=0):
    pixels = _pixels(frames, (32, 42), "bicubic", CLIP)[..., :, 5:37]  # CenterCrop(32): left = round(10 / 2)
    with torch.no_grad():
        return tiny_clip_vision(seed)(pixel_values=pixels).image_embeds


def test_static_video_is_perfectly_consistent(tmp_path):
    path = _video(tmp_path, "static.mp4", _noise(1) * 6)
    with NativeScorer(**TINY) as scorer:
        assert scorer.dimensions == NATIVE_DIMENSIONS
        scores = _scores(scorer, path)
    for dim in ("subject_consistency", "background_consistency", "temporal_flickering"):
        assert scores[dim] == pytest.approx(1.0, abs=1e-6), dim
    assert math.isfinite(scores["aesthetic_quality"])
    assert all(type(v) is float for v in scores.values())


def test_changing_content_scores_lower(tmp_path):
    static = _video(tmp_path, "static.mp4", _moving_square(1) * 6)
    moving = _video(tmp_path, "moving.mp4", _moving_square(6))
    with NativeScorer(**TINY) as scorer:
        still, moved = (r.scores for r in scorer.score([("s", static), ("m", moving)]))
    for dim in ("subject_consistency", "background_consistency", "temporal_flickering"):
        assert moved[dim] < still[dim] - 1e-4, dim


def test_temporal_flickering_matches_numpy_reference(tmp_path):
    frames = [np.full((H, W, 3), 100 if i % 2 else 140, np.uint8) for i in range(7)]
    frames[3][:, : W // 2] = 255  # not all pairs alike
    path = _video(tmp_path, "flicker.mp4", frames)
    decoded = read_frames(path).astype(np.float32)
    pair_means = [np.mean(np.abs(decoded[i] - decoded[i + 1])) for i in range(len(decoded) - 1)]
    expected = (255.0 - np.mean(pair_means)) / 255.0
    assert expected < 0.9  # the pattern really flickers
    # frame_batch=3: pairs across chunk borders (frames 2-3, 5-6) must count too
    with NativeScorer(dimensions=["temporal_flickering"], frame_batch=3) as scorer:
        assert _scores(scorer, path)["temporal_flickering"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("frame_batch", [64, 4])
def test_consistency_matches_vbench_loop(tmp_path, frame_batch):
    frames = _noise(7, seed=3)
    path = _video(tmp_path, "noise.mp4", frames)
    decoded = read_frames(path)
    dims = ["subject_consistency", "background_consistency"]
    with NativeScorer(dimensions=dims, frame_batch=frame_batch, **TINY) as scorer:
        scores = _scores(scorer, path)
    assert scores["subject_consistency"] == pytest.approx(_vbench_consistency(_dino_features(decoded)), abs=1e-6)
    assert scores["background_consistency"] == pytest.approx(_vbench_consistency(_clip_features(decoded)), abs=1e-6)


def test_opposite_features_count_as_zero_not_negative():
    e = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])  # frame 1 opposes frames 0 and 2
    # frame 1: max(0, -1) twice -> 0; frame 2: max(0, -1) to frame 1, 1 to frame 0 -> 0.5
    assert _consistency(e) == pytest.approx(0.25)
    assert _consistency(e) == pytest.approx(_vbench_consistency(e))


def test_dino_position_interpolation_is_dinos():
    embeddings = tiny_dino(0).embeddings
    tokens = torch.zeros(1, 1 + 4 * 5, 32)  # a 32x42 frame: 4x5 patches from the 4x4 grid
    ours = _dino_pos_encoding(embeddings, tokens, 32, 42)
    assert torch.allclose(ours, _dino_interpolation(embeddings, tokens, 32, 42), atol=1e-6)
    assert not torch.allclose(ours, embeddings.interpolate_pos_encoding(tokens, 32, 42), atol=1e-3)
    square = torch.zeros(1, 17, 32)
    assert _dino_pos_encoding(embeddings, square, 32, 32) is embeddings.position_embeddings


def test_aesthetic_uses_the_given_head(tmp_path):
    frames = _noise(5, seed=4)
    path = _video(tmp_path, "noise.mp4", frames)
    head = {"weight": torch.randn(1, 16, generator=torch.Generator().manual_seed(1)), "bias": torch.tensor([5.0])}
    torch.save(head, tmp_path / "head.pth")
    with NativeScorer(dimensions=["aesthetic_quality"], aesthetic_model="tiny-random",
                      aesthetic_head=tmp_path / "head.pth") as scorer:
        got = _scores(scorer, path)["aesthetic_quality"]
    embeds = F.normalize(_clip_features(read_frames(path)), dim=-1, p=2)
    expected = ((embeds @ head["weight"].T + head["bias"]).squeeze(-1) / 10).mean().item()
    assert got == pytest.approx(expected, abs=1e-6)
    assert got == pytest.approx(0.5, abs=0.2)  # the bias dominates: the score is on VBench's /10 scale

    torch.save({"weight": torch.zeros(1, 768), "bias": torch.zeros(1)}, tmp_path / "wide.pth")
    with pytest.raises(ValueError, match=r"weight \[1, 16\]"):
        NativeScorer(dimensions=["aesthetic_quality"], aesthetic_model="tiny-random",
                     aesthetic_head=tmp_path / "wide.pth")


def test_checkpoint_directories_score_like_tiny_random(tmp_path):
    path = _video(tmp_path, "noise.mp4", _noise(5, seed=5))
    tiny_dino(3).save_pretrained(tmp_path / "dino")
    tiny_clip_vision(3).save_pretrained(tmp_path / "clip")
    torch.save(tiny_aesthetic_head(16, 3).state_dict(), tmp_path / "head.pth")
    with NativeScorer(dino_model="tiny-random:3", clip_model="tiny-random:3", aesthetic_model="tiny-random:3") as s:
        in_process = _scores(s, path)
    with NativeScorer(dino_model=str(tmp_path / "dino"), clip_model=str(tmp_path / "clip"),
                      aesthetic_model=str(tmp_path / "clip"), aesthetic_head=str(tmp_path / "head.pth")) as s:
        loaded = _scores(s, path)
    assert loaded == pytest.approx(in_process, abs=1e-7)
    with NativeScorer(**TINY) as s:
        assert _scores(s, path)["subject_consistency"] != pytest.approx(in_process["subject_consistency"], abs=1e-7)


def test_bad_videos_get_reasons_and_the_rest_are_scored(tmp_path):
    good = _video(tmp_path, "good.mp4", _noise(4))
    one = _video(tmp_path, "one.mp4", _noise(1))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    items = [("good", good), ("garbage", str(garbage)), ("one", one), ("missing", str(tmp_path / "no.mp4")),
             ("again", good)]
    with NativeScorer(**TINY) as scorer:
        results = scorer.score(items)
    assert [r.key for r in results] == [key for key, _ in items]
    assert [r.reason for r in results] == [None, "video_unreadable", "too_few_frames", "video_missing", None]
    assert results[1].error.startswith(str(garbage)) and results[2].error.startswith(one)
    assert set(results[0].scores) == set(NATIVE_DIMENSIONS) and results[0].scores == results[4].scores
    assert not results[1].scores and not results[2].scores


def test_max_frames_feeds_the_models_vbench_middle_frames(tmp_path):
    path = _video(tmp_path, "noise.mp4", _noise(12, seed=6))
    decoded = read_frames(path)
    dims = ["subject_consistency", "temporal_flickering"]
    with NativeScorer(dimensions=dims, max_frames=4, frame_batch=5, **TINY) as scorer:
        sampled = _scores(scorer, path)
    with NativeScorer(dimensions=dims, **TINY) as scorer:
        full = _scores(scorer, path)
    # 12 frames in 4 bins [0, 3) [3, 6) [6, 9) [9, 12): their middle frames
    expected = _vbench_consistency(_dino_features(decoded[[1, 4, 7, 10]]))
    assert sampled["subject_consistency"] == pytest.approx(expected, abs=1e-6)
    assert sampled["subject_consistency"] != pytest.approx(full["subject_consistency"], abs=1e-6)
    assert sampled["temporal_flickering"] == full["temporal_flickering"]  # flicker always uses adjacent frames
    with NativeScorer(dimensions=dims, max_frames=40, **TINY) as scorer:
        assert _scores(scorer, path) == full


def test_other_dimensions_point_to_the_vbench_backend():
    with pytest.raises(ValueError, match="vbench"):
        NativeScorer(dimensions=["subject_consistency", "motion_smoothness"], **TINY)
    with pytest.raises(ValueError, match="unknown"):
        NativeScorer(dimensions=["sharpness"], **TINY)
    with pytest.raises(ValueError, match="max_frames"):
        NativeScorer(max_frames=1, **TINY)


def test_models_load_only_when_needed_and_real_aesthetic_needs_its_head(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to load a real model")

    monkeypatch.setattr(ViTModel, "from_pretrained", no_download)
    monkeypatch.setattr(CLIPVisionModelWithProjection, "from_pretrained", no_download)
    with pytest.raises(ValueError, match="sa_0_4_vit_l_14_linear.pth"):
        NativeScorer()  # the real defaults: refused before DINO or CLIP loads
    with pytest.raises(ValueError, match="not a file"):
        NativeScorer(dimensions=["aesthetic_quality"], aesthetic_head=tmp_path / "absent.pth")
    path = _video(tmp_path, "static.mp4", _noise(1) * 3)
    scorer = NativeScorer(dimensions=["temporal_flickering"])  # real model specs, none loaded
    assert _scores(scorer, path) == {"temporal_flickering": 1.0}
    scorer.close()
    with pytest.raises(RuntimeError, match="closed"):
        scorer.score([("k", path)])


def test_videos_scored_at_once_on_threads_give_the_serial_scores_in_order(tmp_path):
    items = [(f"v{i}", _video(tmp_path, f"v{i}.mp4", _noise(5, seed=i) if i % 2 else _moving_square(5)))
             for i in range(6)]
    with NativeScorer(workers=1, **TINY) as serial, NativeScorer(workers=3, **TINY) as threaded:
        one, many = serial.score(items), threaded.score(items)
    assert [r.key for r in many] == [k for k, _ in items]
    assert [r.scores for r in many] == [r.scores for r in one]
    with pytest.raises(ValueError, match="workers"):
        NativeScorer(workers=0, dimensions=["temporal_flickering"])


def test_the_two_clips_share_one_transform_per_chunk(tmp_path, monkeypatch):
    import filtering.native as native

    calls = []
    real = native._transform

    def counting(x, **kw):
        calls.append(kw["mode"])
        return real(x, **kw)

    path = _video(tmp_path, "v.mp4", _moving_square(6))
    with NativeScorer(frame_batch=4, **TINY) as scorer:  # 2 chunks; DINO's transform differs from CLIP's
        for encoder in scorer._encoders.values():
            monkeypatch.setattr(encoder, "transform", partial(counting, **encoder.transform.keywords))
        _scores(scorer, path)
    assert sorted(calls) == ["bicubic", "bicubic", "bilinear", "bilinear"]
