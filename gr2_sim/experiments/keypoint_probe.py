"""keypoint-probe: do a model's keypoints know where the objects are?

A ridge regression from a run's keypoints (frozen: each frame and its episode's instruction through the
run's keypoint encoder) to the positions that ``object_state`` data records after the robot state (the named
object's and the goal's x, y, z), fitted on frames of the data's train split and scored on its held-out
split: R^2 per target (None for a coordinate that does not vary, such as a cube's height on the table), and
the median error of the named object's (x, y) in cm. Beside the runs: the same
model at its initial weights (seed 0, untrained), the floor of a linear read-out of random convolutional
features, and the mean position (R^2 = 0).

A policy that sees where the named cube is has keypoints from which its position is (close to) linear.
``--aux-state`` fits this with labels; the keypoint decoder (``--set keypoint_decoder=SIDE``) asks it of
video alone; the action loss asks it of demonstrations. This probe says how far each got.

CPU budget: seconds per run (one pass of the keypoint encoder over a few thousand frames).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common

TARGETS = ("object x", "object y", "object z", "goal x", "goal y", "goal z")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="experiment folder")
    p.add_argument("--run", required=True, nargs="+", help="run folder(s) or checkpoints of the DiT to probe")
    p.add_argument("--data", required=True,
                   help="demos collected with --env-kwargs '{\"object_state\": true}' (the positions are the "
                        "last 6 state values), on the task the runs were trained on")
    p.add_argument("--frames", type=int, default=4000, help="frames of each split used (evenly spaced)")
    p.add_argument("--ridge", type=float, default=1e-3, help="ridge penalty on the standardised keypoints")


def positions_and_frames(data: Path, split: str, frames: int):
    """(images (N, S, S, 3) uint8, positions (N, 6), instruction per frame) from ``frames`` evenly spaced
    frames of ``split``."""
    from gr2_sim.data import load_episodes

    episodes = load_episodes(data, split=split)
    if not episodes.env_kwargs.get("object_state") or episodes.states.shape[1] < len(TARGETS) + 1:
        raise UserError(f"--data {data} has no object positions in its state (env_kwargs {episodes.env_kwargs}); "
                        f"collect it with --env-kwargs '{{\"object_state\": true}}'")
    n = len(episodes.images)
    rows = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))
    episode_of = np.searchsorted(episodes.episode_ends, rows, side="right")
    return (episodes.images[rows], episodes.states[rows, -len(TARGETS):],
            [episodes.instructions[e] for e in episode_of])


def keypoints_of(model, images: np.ndarray, instructions: list[str], batch: int = 256) -> np.ndarray:
    """(N, 2K) keypoints of frames (N, S, S, 3) uint8 with their instructions, no text dropout."""
    import torch

    from gr2_sim.dataset import frames_to_tensor
    from gr2_sim.text import tokenize

    cfg, out = model.config, []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            tokens = tokenize(instructions[i:i + batch], cfg.max_text_len, cfg.vocab_size)
            lang = model.text_encoder(tokens)
            out.append(model.keypoints(frames_to_tensor(images[i:i + batch]), lang).numpy())
    return np.concatenate(out).astype(np.float64)


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                penalty: float) -> dict:
    """Fit y = x W + b on standardised x; R^2 per target and the prediction error on the test rows."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    a = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
    reg = penalty * len(a) * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the bias
    w = np.linalg.solve(a.T @ a + reg, a.T @ train_y)
    pred = np.c_[(test_x - mean) / std, np.ones(len(test_x))] @ w
    ss_res = ((test_y - pred) ** 2).sum(0)
    ss_tot = ((test_y - train_y.mean(0)) ** 2).sum(0)
    xy_error = np.linalg.norm(pred[:, :2] - test_y[:, :2], axis=1)
    # a coordinate that barely varies (a cube's height on the table) has no R^2 worth reading: None
    still = test_y.std(0) < 1e-3
    return {"r2": {name: None if flat else float(1 - r / t)
                   for name, r, t, flat in zip(TARGETS, ss_res, ss_tot, still, strict=True)},
            "object_xy_error_cm": {"median": float(100 * np.median(xy_error)),
                                   "ci95": common.bootstrap_mean_ci(100 * xy_error)["ci95"],
                                   "mean": float(100 * xy_error.mean())}}


def probe(model, train, test, penalty: float) -> dict:
    (train_images, train_y, train_text), (test_images, test_y, test_text) = train, test
    return ridge_probe(keypoints_of(model, train_images, train_text), train_y,
                       keypoints_of(model, test_images, test_text), test_y, penalty)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.4))
    x = np.arange(len(rows))
    for i, target in enumerate(("object x", "object y", "goal x", "goal y")):
        ax.bar(x + (i - 1.5) * 0.2, [r["r2"][target] or 0.0 for r in rows], 0.2, label=target)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out R^2 of a linear probe")
    ax.set_ylim(min([0.0] + [v for r in rows for v in r["r2"].values() if v is not None]), 1.0)
    ax.axhline(0, color="k", lw=0.8)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_name(path: Path) -> str:
    """RUN, RUN/best or RUN/step_N: the name a row of the table gets."""
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return f"{path.parent.name}/{path.name}" if path.name == "best" else path.name


def run(args: argparse.Namespace) -> int:
    import torch

    from gr2_sim import checkpoint as ckpt
    from gr2_sim.model import VideoActionDiT

    common.check_positive(args, "frames")
    if not args.ridge >= 0:
        raise UserError(f"--ridge must be >= 0, got {args.ridge}")
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = common.existing_file(args.data, "--data")
    train, test = (positions_and_frames(data, split, args.frames) for split in ("train", "valid"))
    models = [(run_name(Path(r)), ckpt.load_dit(r, what="the keypoint probe")) for r in args.run]
    for name, model in models:
        if model.keypoints is None:
            raise UserError(f"{name}: its model has no keypoints (keypoints=0); the probe reads the keypoint encoder")
    torch.manual_seed(0)
    untrained = VideoActionDiT(models[0][1].config).eval()
    rows = [{"name": "untrained", "run": None, **probe(untrained, train, test, args.ridge)}]
    for (name, model), run_path in zip(models, args.run, strict=True):
        rows.append({"name": name, "run": str(run_path), **probe(model, train, test, args.ridge)})
        r2 = ", ".join(f"{k} {v:.2f}" for k, v in rows[-1]["r2"].items() if v is not None)
        print(f"{name}: R^2 {r2}; median object xy error {rows[-1]['object_xy_error_cm']['median']:.1f} cm", flush=True)
    spread = np.linalg.norm(test[1][:, :2] - train[1][:, :2].mean(0), axis=1)
    figure = plot(rows, out / "keypoint_probe.png")
    common.write_summary(out, args, started, {
        "data": str(data), "train_frames": len(train[0]), "test_frames": len(test[0]), "targets": list(TARGETS),
        "mean_position_object_xy_error_cm": float(100 * np.median(spread)), "results": rows,
        "figures": [figure.name]})
    return 0
