"""Detection presets: which BlazeFace passes (model, scale) run on a frame, their thresholds, and how uncertain
finds get a second look. ``edge.detect`` builds the detectors from them; docs/detection.md has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.blazeface import BLAZEFACE_SPECS

# BlazeFace short-range finds faces ~40-100 px wide in its input and misfires more below that: a
# coarser pass of a preset keeps only faces at least this wide in its input (the finer pass sees them),
# unless the preset gives uncertain finds a second look (Preset.verify_from), which lets it keep more.
MIN_INPUT_PX = 36
# Boxes narrower than this (frame pixels) are skipped, unless the preset says otherwise or the config sets min_size.
MIN_SIZE = 48
# A merged find whose box is narrower than this (frame pixels) is uncertain whatever its score (misfires on
# textures are small): a preset that verifies keeps it only when its window finds it again.
VERIFY_PX = 48
# The second look (edge.schedule.verify): the window's find needs the preset's threshold and, averaged with
# the candidate's score, at least this (a textured blob scoring ~0.6-0.7 everywhere stays out).
VERIFY_MEAN = 0.68
# Tag of a find that passed its pass's threshold (bits below it: which pass found it, pass i -> 1 << i).
SURE = 1 << 16


@dataclass(frozen=True)
class Pass:
    """One scale of a detection stage: a model on the whole frame, letterboxed into its own input
    (``scale`` None) or resized to ``scale`` x the frame size (bigger scale: smaller faces found)."""

    model: str
    scale: float | None = None
    # This pass's threshold for a find to stand on its own (None: the preset's); finds between the preset's
    # verify_from and this get a second look.
    min_score: float | None = None

    def label(self) -> str:
        short = self.model.replace("blazeface_", "")
        return short if self.scale is None else f"{short}@{self.scale:g}"

    def input_scale(self, width: int, height: int) -> float:
        """Model input pixels per frame pixel."""
        return self.scale if self.scale is not None else BLAZEFACE_SPECS[self.model].input_size / max(width, height)

    def shape(self, width: int, height: int) -> tuple[int, int] | None:
        """Model input (height, width) for a frame of that size: multiples of 16 (the coarsest stride)."""
        if self.scale is None:
            return None
        return (max(16, int(round(height * self.scale / 16)) * 16), max(16, int(round(width * self.scale / 16)) * 16))


@dataclass(frozen=True)
class Preset:
    """A detection stage: its passes (merged by weighted NMS), its score threshold, and how often a video
    frame gets every pass (``full_every``; 1: every frame, no schedule)."""

    passes: tuple[Pass, ...]
    min_score: float
    use: str
    full_every: int = 1
    # Finds from this score up to the pass's threshold, and merged boxes under VERIFY_PX, are candidates that a
    # window pass confirms or drops (edge.schedule.verify), unless two passes found them (and the box is not small);
    # None: no second look, the threshold decides.
    verify_from: float | None = None
    min_input_px: int = MIN_INPUT_PX  # a coarser pass keeps only finds at least this wide in its input
    min_size: int = MIN_SIZE  # the default [detector] min_size for this preset


# Chosen by measurement on FER2013 PrivateTest faces rendered into 640x480 mp4 frames
# (`fer-edge bench e2e`, docs/detection.md). BlazeFace short-range finds faces ~40-100 px wide in
# its input; each pass serves one band of face sizes (an image pyramid on the whole frame, no tiles):
# auto at 0.8 / 0.4 / 0.2 (native 128 px letterbox) covers ~50-125 / 100-250 / 200-480 px faces. Threshold 0.65
# (0.6 lets a round badge on the sample clip's spacesuit through, score 0.61); the 0.8 pass, whose misfires on
# textures score up to ~0.75, stands alone from 0.8. Finds from 0.5, and boxes under VERIFY_PX, get a second look
# in a window (edge.schedule.verify): +10 points at 72 px without false positives on 950 face-free frames.
PRESETS: dict[str, Preset] = {
    "driver": Preset((Pass("blazeface_short"),), 0.5, "one near face (>= ~150 px in 640x480)"),
    "classroom": Preset((Pass("blazeface_short", 0.65), Pass("blazeface_short", 0.35)), 0.6,
                        "many small faces (~60-300 px in 640x480)"),
    "auto": Preset((Pass("blazeface_short", 0.7, 0.7), Pass("blazeface_short", 0.4), Pass("blazeface_short")), 0.65,
                   "the whole range (~50 px to frame-filling)", full_every=5, verify_from=0.5, min_input_px=24,
                   min_size=32),
}
