"""Frame strips for the README: each task solved by its expert, and the synthetic physics video.

    python -m gr2_sim.gallery --out docs/img
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def upscale(frame: np.ndarray, k: int) -> np.ndarray:
    return np.kron(frame, np.ones((k, k, 1), dtype=frame.dtype))


def grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile rows of equal-size frames with a white gutter."""
    h, w, _ = rows[0][0].shape
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, f in enumerate(row):
            out[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = f
    return out


def expert_frames(task: str, seed: int, n: int, image_size: int = 64) -> tuple[list[np.ndarray], str]:
    """``n`` observation frames spread evenly over one expert episode, and its instruction."""
    import gymnasium as gym

    import envs

    env = gym.make(f"GR2Sim/{task}-v0", image_size=image_size)
    expert = envs.make_expert(env)
    obs, info = env.reset(seed=seed)
    frames, done = [obs["image"]], False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.select_action(obs))
        frames.append(obs["image"])
        done = terminated or truncated
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return [frames[i] for i in idx], info["instruction"]


def task_strips(out_dir: Path, n: int = 8, scale: int = 2) -> Path:
    import envs

    rows, captions = [], []
    for task in [t for t in envs.TASKS if t != "MultiTask"]:
        frames, instruction = expert_frames(task, seed=1_000_000, n=n)
        rows.append([upscale(f, scale) for f in frames])
        captions.append(f"{task}: {instruction}")
    path = out_dir / "tasks_strip.png"
    _save(path, grid(rows))
    (out_dir / "tasks_strip.txt").write_text("\n".join(captions) + "\n")
    return path


def _save(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/img")
    args = p.parse_args()
    print(task_strips(Path(args.out)))


if __name__ == "__main__":
    main()
