"""Parameters of the trajectory -> action rule (FACTS §3) and of the segment/chunk views built on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from yume_core.actions import phrase_table


@dataclass(frozen=True)
class QuantizeConfig:
    stride: int = 1  # poses are subsampled P[::stride] before pairing
    translation_threshold: float = 1e-4  # per frame; multiplied by stride, as Yume does
    rotation_threshold: float = 1e-3  # radians per frame; multiplied by stride
    min_segment_frames: int = 33  # shortest constant-label run kept as a segment, in frames (inclusive count)
    chunk_frames: int = 32  # Yume-1.5 generates 32 frames per autoregressive chunk
    fps: float = 30.0  # Sekai trajectories are sampled at the video's 30 fps
    vocabulary: str = "yume15"  # which phrase set later stages turn labels into

    def __post_init__(self):
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be a positive integer, got {self.stride!r}")
        if self.translation_threshold < 0 or self.rotation_threshold < 0:
            raise ValueError(
                f"thresholds must be >= 0, got translation {self.translation_threshold}, "
                f"rotation {self.rotation_threshold}"
            )
        if self.min_segment_frames < 2:
            raise ValueError(
                f"min_segment_frames must be >= 2 (one step spans 2 frames), got {self.min_segment_frames}"
            )
        if self.chunk_frames < 2 * self.stride:
            # below this some chunks would hold no whole step and get no label
            raise ValueError(
                f"chunk_frames ({self.chunk_frames}) must be at least twice the stride ({self.stride}) so that every "
                "chunk holds a whole step; raise chunk_frames or lower stride"
            )
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        phrase_table(self.vocabulary)  # a wrong name or a broken file stops the run before any batch starts

    @property
    def translation_cutoff(self) -> float:
        return self.translation_threshold * self.stride

    @property
    def rotation_cutoff(self) -> float:
        return self.rotation_threshold * self.stride

    def to_dict(self) -> dict:
        return asdict(self)
