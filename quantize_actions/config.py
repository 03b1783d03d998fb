"""Parameters of the trajectory -> action labelling (FACTS §3), of the trajectory checks, and of the segment/chunk
views built on the labels.

Two labelling modes share the vocabulary and every threshold's unit (per frame, multiplied by the stride):
`published` is Yume's rule as released, step by step (the default, so a dataset built before the modes existed is
rebuilt label for label); `heading` reads the same thresholds against windowed, clip-relative motion
(`quantize_actions/heading.py`). Both are recorded with the labels, in the manifest's metadata and every sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from yume_core.actions import phrase_table

MODES = ("published", "heading")
TRAJECTORY_FLAGS = ("jitter", "jump", "frozen")


@dataclass(frozen=True)
class HeadingConfig:
    """The `heading` mode's windows and bands; see `quantize_actions/heading.py` for why each exists."""

    window_frames: int = 15  # keys: motion summed over this many frames around each step (0.5 s at 30 fps)
    mouse_window_frames: int = 9  # mouse: yaw/pitch rate averaged over this many frames around each step
    still_fraction: float = 0.3  # keys are None below this share of the clip's typical walking speed
    hysteresis: float = 0.25  # a state turns on at threshold*(1+h) and off at threshold*(1-h)
    sector_margin_deg: float = 7.5  # a heading this close to a sector edge keeps the sector it came from

    def __post_init__(self):
        for name in ("window_frames", "mouse_window_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"heading.{name} must be a positive integer number of frames, got {value!r}")
        if not 0 < self.still_fraction < 1:
            raise ValueError(f"heading.still_fraction must lie in (0, 1), got {self.still_fraction}")
        if not 0 <= self.hysteresis < 1:
            raise ValueError(f"heading.hysteresis must lie in [0, 1), got {self.hysteresis}")
        if not 0 <= self.sector_margin_deg < 22.5:
            raise ValueError(f"heading.sector_margin_deg must lie in [0, 22.5), got {self.sector_margin_deg}")


@dataclass(frozen=True)
class CheckConfig:
    """Trajectory checks (`quantize_actions/checks.py`); every ratio is against the clip's own motion, because
    Sekai scales each video's translations to +-1 and no absolute distance means the same in two clips."""

    jitter_ratio: float = 2.5  # worst rolling median of the prediction error, in path steps
    jitter_window: int = 15  # frames in that rolling median (0.5 s): one bad frame or one jump does not make jitter
    jump_ratio: float = 5.0  # one step this many typical (and neighbouring) steps long; walking stays under ~2.5
    frozen_share: float = 0.01  # a step moving less than this share of a typical step (and rotation) is no change
    frozen_frames: int = 6  # that many frames in a row without change (0.2 s at 30 fps) are a frozen stretch

    def __post_init__(self):
        if self.jitter_ratio <= 0 or self.jump_ratio <= 0 or not 0 <= self.frozen_share < 1:
            raise ValueError(
                f"checks: jitter_ratio and jump_ratio must be > 0 and frozen_share in [0, 1), got {self.jitter_ratio}, "
                f"{self.jump_ratio}, {self.frozen_share}"
            )
        if not isinstance(self.jitter_window, int) or self.jitter_window < 1 or self.jitter_window % 2 == 0:
            raise ValueError(
                f"checks.jitter_window must be an odd positive number of frames, got {self.jitter_window!r}")
        if not isinstance(self.frozen_frames, int) or self.frozen_frames < 2:
            raise ValueError(f"checks.frozen_frames must be an integer >= 2, got {self.frozen_frames!r}")


@dataclass(frozen=True)
class QuantizeConfig:
    stride: int = 1  # poses are subsampled P[::stride] before pairing
    translation_threshold: float = 1e-4  # per frame; multiplied by stride, as Yume does
    rotation_threshold: float = 1e-3  # radians per frame; multiplied by stride
    min_segment_frames: int = 33  # shortest constant-label run kept as a segment, in frames (inclusive count)
    chunk_frames: int = 32  # Yume-1.5 generates 32 frames per autoregressive chunk
    fps: float = 30.0  # Sekai trajectories are sampled at the video's 30 fps
    vocabulary: str = "yume15"  # which phrase set later stages turn labels into
    mode: str = "published"  # how poses become labels: Yume's per-step rule, or windowed heading sectors
    heading: HeadingConfig = field(default_factory=HeadingConfig)
    checks: CheckConfig = field(default_factory=CheckConfig)
    drop_flags: tuple[str, ...] = ()  # trajectory flags that drop a clip (reason trajectory_<flag>); none by default

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
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        object.__setattr__(self, "drop_flags", tuple(self.drop_flags))
        unknown = [f for f in self.drop_flags if f not in TRAJECTORY_FLAGS]
        if unknown:
            raise ValueError(f"drop_flags {unknown} are not trajectory flags; known: {list(TRAJECTORY_FLAGS)}")
        phrase_table(self.vocabulary)  # a wrong name or a broken file stops the run before any batch starts

    def recorded(self) -> dict:
        """The settings a sample and its provenance record. Labels made by Yume's published rule as released
        (`published` mode, no clip dropped by its flags) record what they always did, so a build from before the
        modes existed is rebuilt byte for byte; any other labelling records its mode, settings and checks."""
        settings = asdict(self)
        if self.mode == "published" and not self.drop_flags:
            for name in ("mode", "heading", "checks", "drop_flags"):
                settings.pop(name)
        return settings

    @property
    def translation_cutoff(self) -> float:
        return self.translation_threshold * self.stride

    @property
    def rotation_cutoff(self) -> float:
        return self.rotation_threshold * self.stride

    def to_dict(self) -> dict:
        return asdict(self)
