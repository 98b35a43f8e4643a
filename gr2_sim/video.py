"""Evaluation videos: the real camera beside the model's imagined future, with a caption strip.

One video frame per environment step::

    +----------------------+-----------+-----------+
    |                      | pred 1    | pred 2    |   the T frames predicted at the last query, 64 -> 128 px,
    |   camera, 256 x 256  +-----------+-----------+   two per row; the one for the current step is outlined
    |                      | pred 3    | pred 4    |   (absent when the policy predicts no video)
    +----------------------+-----------+-----------+
    | TOUCH THE RED CUBE                           |   caption: instruction, step, outcome; grey while
    | STEP 7/12  SUCCESS                           |   running, green once solved, red on a failed last frame
    +----------------------------------------------+

Text uses a built-in 3x5 pixel font (no font files). Files are H.264 mp4 through imageio-ffmpeg, or GIF when
ffmpeg is unavailable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from gr2_sim.obs_adapter import resize_image

CAMERA, TILE, CAPTION, FPS = 256, 128, 32, 10
COLORS = {"running": (45, 45, 45), "success": (30, 120, 45), "failure": (150, 35, 35)}
OUTLINE = (255, 210, 0)

# 3x5 glyphs, rows top to bottom, '1' = ink
_GLYPHS = dict(zip(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-/%,'? ",
    ("010101111101101 110101110101110 011100100100011 110101101101110 111100110100111 111100110100100 "
     "011100101101011 101101111101101 111010010010111 001001001101010 101101110101101 100100100100111 "
     "101111111101101 110101101101101 010101101101010 110101110100100 010101101110011 110101110101101 "
     "011100010001110 111010010010010 101101101101111 101101101101010 101101111111101 101101010101101 "
     "101101010010010 111001010100111 111101101101111 010110010010111 110001010100111 110001010001110 "
     "101101111001001 111100110001110 011100111101111 111001010010010 111101111101111 111101111001110 "
     "000000000000010 000010000010000 000000111000000 001001010100100 101001010100101 000000000010100 "
     "010010000000000 110001010000010 000000000000000").split(),
    strict=True))


def draw_text(image: np.ndarray, text: str, x: int, y: int, scale: int = 2,
              color: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Write ``text`` (upper-cased; unknown characters as '?') into ``image`` (H, W, 3) at (x, y), in place."""
    step = 4 * scale
    for i, char in enumerate(text.upper()):
        left = x + i * step
        if left + 3 * scale > image.shape[1]:
            break
        glyph = np.array([int(b) for b in _GLYPHS.get(char, _GLYPHS["?"])], bool).reshape(5, 3)
        mask = np.kron(glyph, np.ones((scale, scale), bool))  # (5*scale, 3*scale)
        region = image[y:y + mask.shape[0], left:left + mask.shape[1]]
        region[mask[:region.shape[0], :region.shape[1]]] = color


def predictions_panel(predicted: np.ndarray, highlight: int | None = None) -> np.ndarray:
    """(T, S, S, 3) uint8 -> (ceil(T/2) * 128, 256, 3): tiles two per row; tile ``highlight`` outlined."""
    rows = -(-len(predicted) // 2)
    panel = np.zeros((rows * TILE, 2 * TILE, 3), np.uint8)
    for j, frame in enumerate(predicted):
        r, c = divmod(j, 2)
        tile = resize_image(frame, TILE)
        if j == highlight:
            tile = tile.copy()
            tile[:3], tile[-3:], tile[:, :3], tile[:, -3:] = OUTLINE, OUTLINE, OUTLINE, OUTLINE
        panel[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile
    return panel


def compose_frame(camera: np.ndarray, predicted: np.ndarray | None, lines: list[str], status: str,
                  panel_rows: int = 0, highlight: int | None = None) -> np.ndarray:
    """One video frame (H, W, 3) uint8: camera (resized to 256), a prediction panel of ``panel_rows`` tile rows
    (0 = none; blank until the first prediction), and the caption ``lines`` on a ``status``-colored strip.
    Height and width are multiples of 16, as H.264 wants."""
    height = max(CAMERA, panel_rows * TILE)
    width = CAMERA + (2 * TILE if panel_rows else 0)
    out = np.zeros((height + CAPTION, width, 3), np.uint8)
    out[:CAMERA, :CAMERA] = resize_image(camera, CAMERA)
    if panel_rows and predicted is not None:
        panel = predictions_panel(predicted, highlight)
        out[:panel.shape[0], CAMERA:CAMERA + panel.shape[1]] = panel[:height]
    out[height:] = COLORS[status]
    for i, line in enumerate(lines[:2]):
        draw_text(out, line, 6, height + 4 + 14 * i)
    return out


class EpisodeRecorder:
    """Collects one episode's camera frames and predictions; ``frames()`` composes the video frames.

    Call ``add`` once per observation, after ``select_action`` on it (so the prediction made from it shows).
    """

    def __init__(self, instruction: str, max_steps: int | None = None) -> None:
        self.instruction = instruction or "(no instruction)"
        self.max_steps = max_steps
        self._steps: list[tuple[np.ndarray, int | None, int, bool]] = []  # camera, prediction id, offset, success
        self._predictions: list[np.ndarray] = []

    def add(self, camera: np.ndarray, predicted: np.ndarray | None, new_query: bool, success: bool) -> None:
        """camera: (H, W, 3) uint8; predicted: (T, S, S, 3) uint8 frames of the latest query or None."""
        camera = resize_image(camera, CAMERA)  # stored small: 192 KB per step
        if predicted is not None and (new_query or not self._predictions):
            self._predictions.append(np.array(predicted, np.uint8))
        pred_id = len(self._predictions) - 1 if predicted is not None else None
        offset = 0 if new_query or not self._steps else self._steps[-1][2] + 1
        self._steps.append((camera, pred_id, offset, success))

    def frames(self, success: bool) -> list[np.ndarray]:
        """The composed video frames; the last one red when the episode failed."""
        horizon = max((len(p) for p in self._predictions), default=0)
        rows = -(-horizon // 2)
        limit = f"/{self.max_steps}" if self.max_steps else ""
        out = []
        for t, (camera, pred_id, offset, solved) in enumerate(self._steps):
            last = t == len(self._steps) - 1
            status = "success" if solved else ("failure" if last and not success else "running")
            word = "SUCCESS" if solved else ("FAILED" if status == "failure" else "")
            predicted = self._predictions[pred_id] if pred_id is not None else None
            highlight = offset if predicted is not None and offset < len(predicted) else None
            out.append(compose_frame(camera, predicted, [self.instruction, f"step {t}{limit}  {word}"], status,
                                     rows, highlight))
        return out


def ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return os.path.exists(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError, OSError):
        return False


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """Write ``frames`` ((H, W, 3) uint8, all one size) to ``path`` as mp4, or beside it as .gif when ffmpeg is
    unavailable or fails. Returns the path written (a temporary name is renamed into place)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    if ffmpeg_available():
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.mp4'}")
        try:
            with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=16,
                                    ffmpeg_log_level="error") as writer:
                for frame in frames:
                    writer.append_data(frame)
            os.replace(tmp, path)
            return path
        except Exception as err:  # a broken ffmpeg build: fall back rather than lose the evaluation
            warnings.warn(f"ffmpeg could not write {path} ({err}); writing a GIF instead", stacklevel=2)
            tmp.unlink(missing_ok=True)
    gif = path.with_suffix(".gif")
    tmp = gif.with_name(f".{gif.stem}.tmp.gif")
    imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
    os.replace(tmp, gif)
    return gif
