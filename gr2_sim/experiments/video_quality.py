"""video-quality: do the predicted frames beat copying the conditioning frame where the scene changes?

On held-out windows of a demos (or robot-video) file, each run's predicted future frames are compared with the
real ones over the pixels that change: those where a real future frame differs from the conditioning frame
by more than ``--threshold`` in some channel (frames in [-1, 1]; 0.1 = 13/255). Copying the conditioning
frame is nearly perfect on every other pixel, so the full-frame error hides what moved; over the changed
pixels, copying is wrong by construction and a model that predicts the motion can beat it.

Predictions, per run:
    ddim      the frames a ``denoise`` policy sees: DDIM from pure noise in ``--ddim-steps`` steps (seeded)
    one-step  the model's clean-frame estimate from pure noise in one pass: the posterior mean, blurry but
              the mean-squared-error optimum if the model has learned it
    copy      the conditioning frame repeated (the reference every model must beat)

Reported: the changed-pixel MSE of each (pooled over windows, and a bootstrap interval over windows), the
ratio model / copy with its paired bootstrap interval, the full-frame MSE and its ratio to copy's; a figure of
real / predicted / copy strips for a few windows. A prediction ``beats_copy`` when its changed-pixel ratio's
interval is below 1 and its whole-frame ratio's is not above 1 (a scrambled frame can win on the changed pixels
alone: measured, a DDIM sample at 0.79 of copy there and 1.92 over the whole frame). The bar (``meets_bar``):
beats copy, changed-pixel ratio at most 0.7 (30% lower than copy).

CPU budget: seconds per run (256 windows x 11 forward passes of the small preset).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common

READOUTS = ("ddim", "one-step", "copy")
BAR = 0.7  # the bar: changed-pixel error at most 70% of copy's (and the whole frame no worse)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="experiment folder")
    p.add_argument("--run", required=True, nargs="+", help="run folder(s) whose video predictions to score")
    p.add_argument("--data", required=True, help="HDF5 file of the runs' env (its held-out split is used)")
    p.add_argument("--windows", type=int, default=256, help="held-out windows")
    p.add_argument("--ddim-steps", type=int, default=10, help="DDIM steps of the ddim readout")
    p.add_argument("--threshold", type=float, default=None,
                   help="a pixel changes when some channel moves by more than this (frames in [-1, 1]); "
                        "default: the training loss's CHANGE_THRESHOLD, 0.1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="valid", choices=("valid", "train"))
    p.add_argument("--batch-size", type=int, default=32)


def changed_mse(pred, future, cond, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per window: (sum of squared error over changed pixels, number of changed pixels).

    pred, future: (B, T, 3, H, W); cond: (B, 3, H, W). The squared error of a pixel is the mean over its
    channels; a pixel changes when |future - cond| exceeds ``threshold`` in some channel."""
    from gr2_sim.objectives import changed_pixels

    mask = changed_pixels(cond, future, threshold)[:, :, 0]  # (B, T, H, W)
    err = (pred - future).pow(2).mean(dim=2)  # (B, T, H, W)
    return (err * mask).flatten(1).sum(1).numpy(), mask.flatten(1).sum(1).numpy()


def ratio_ci(model_sse: np.ndarray, copy_sse: np.ndarray, seed: int, resamples: int = 2000) -> dict:
    """Pooled ratio sum(model) / sum(copy) over windows and its paired percentile-bootstrap interval."""
    keep = copy_sse > 0
    a, b = model_sse[keep], copy_sse[keep]
    if not len(a):
        return {"ratio": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (resamples, len(a)))
    ratios = a[idx].sum(1) / b[idx].sum(1)
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return {"ratio": float(a.sum() / b.sum()), "ci95": [float(lo), float(hi)], "n": int(len(a))}


def score(run: Path, data: Path, windows: int, ddim_steps: int, threshold: float, seed: int, split: str,
          batch_size: int) -> tuple[dict, dict]:
    import torch

    from gr2_sim import checkpoint as ckpt
    from gr2_sim.data import load_episodes
    from gr2_sim.dataset import WindowSampler
    from gr2_sim.diffusion import Diffusion

    model = ckpt.load_dit(run)
    cfg = model.config
    stride = int(ckpt.load_config(run).get("train", {}).get("frame_stride", 1))
    normalizer = ckpt.load_normalizer(run)
    episodes = load_episodes(data, split=split)
    if not episodes.num_episodes:
        raise UserError(f"--data {data} has no {split} episodes; use --split train or a file with held-out ones")
    use_state = cfg.state_dim > 0
    if use_state and episodes.states.shape[1] != cfg.state_dim:
        raise UserError(f"{run} reads a {cfg.state_dim}-D state but {data} stores {episodes.states.shape[1]}-D "
                        f"states: give the file (or env kwargs) the run was trained with")
    sampler = WindowSampler(episodes, cfg.n_future, normalizer, cfg.max_text_len, cfg.vocab_size, stride=stride,
                            use_actions=False, use_state=use_state)
    rows = np.sort(np.random.default_rng(seed).choice(len(sampler), size=min(windows, len(sampler)), replace=False))
    diffusion = Diffusion(cfg)
    gen = torch.Generator().manual_seed(seed)
    sse = {name: [] for name in READOUTS}
    full = {name: [] for name in READOUTS}
    counts, examples = [], None
    for i in range(0, len(rows), batch_size):
        batch = sampler.batch(rows[i:i + batch_size])
        cond, future, text, state = batch["cond"], batch["future"], batch["text"], batch.get("state")
        with torch.no_grad():
            ddim, _ = diffusion.ddim_sample(model, cond, text, state, ddim_steps, generator=gen, return_actions=False)
            noise = torch.randn(future.shape, generator=gen)
            t = torch.full((len(cond),), diffusion.K - 1, dtype=torch.long)
            out = model(cond, noise, t, text, state)["video_pred"]
            one_step, _ = diffusion.predict_x0_eps(noise, t, out)
        preds = {"ddim": ddim, "one-step": one_step, "copy": cond.unsqueeze(1).expand_as(future)}
        for name, pred in preds.items():
            s, n = changed_mse(pred, future, cond, threshold)
            sse[name].append(s)
            full[name].append((pred - future).pow(2).flatten(1).mean(1).numpy())
        counts.append(n)
        if examples is None:
            examples = {"real": future[:3], "cond": cond[:3], **{k: v[:3] for k, v in preds.items()}}
    n = np.concatenate(counts)
    sse = {k: np.concatenate(v) for k, v in sse.items()}
    full = {k: np.concatenate(v) for k, v in full.items()}
    result = {"run": str(run), "windows": int(len(rows)), "frame_stride": stride, "n_future": cfg.n_future,
              "changed_pixel_fraction": float(n.sum() / (len(rows) * cfg.n_future * cfg.img_size**2)),
              "readouts": {}}
    for name in READOUTS:
        per_window = np.where(n > 0, sse[name] / np.maximum(n, 1), np.nan)
        result["readouts"][name] = {
            "changed_mse": float(sse[name].sum() / max(n.sum(), 1)),
            "changed_mse_per_window": common.bootstrap_mean_ci(per_window, seed=seed),
            "full_frame_mse": float(full[name].mean()),
        }
        if name != "copy":
            result["readouts"][name].update(against_copy(sse[name], sse["copy"], full[name], full["copy"], seed))
    return result, examples


def against_copy(changed: np.ndarray, changed_copy: np.ndarray, whole: np.ndarray, whole_copy: np.ndarray,
                 seed: int) -> dict:
    """A prediction against copy, from per-window errors over the changed pixels and over the whole frame:
    both ratios with paired intervals, ``beats_copy`` and ``meets_bar``. A prediction that smears or scrambles
    the frame can beat copy over the changed pixels alone (a blur is closer to "something moved here" than the
    old pixels) while being worse everywhere else, so it beats copy only if the whole frame is not worse too."""
    ratio, whole_ratio = ratio_ci(changed, changed_copy, seed), ratio_ci(whole, whole_copy, seed)
    beats = bool(ratio["ratio"] is not None and ratio["ci95"][1] < 1
                 and whole_ratio["ratio"] is not None and whole_ratio["ci95"][1] <= 1)
    return {"ratio_to_copy": ratio, "full_frame_ratio_to_copy": whole_ratio, "beats_copy": beats,
            "meets_bar": bool(beats and ratio["ratio"] <= BAR)}


def plot(examples: list[tuple[str, dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gr2_sim.dataset import tensor_to_frames

    rows = [(name, ex, k) for name, ex in examples for k in ("real", "ddim", "one-step", "copy")]
    T = examples[0][1]["real"].shape[1]
    fig, axes = plt.subplots(len(rows), T + 1, figsize=(1.3 * (T + 1), 1.35 * len(rows)), squeeze=False)
    for r, (name, ex, key) in enumerate(rows):
        axes[r, 0].imshow(tensor_to_frames(ex["cond"][0:1])[0])
        axes[r, 0].set_ylabel(f"{Path(name).name}\n{key}" if key == "real" else key, fontsize=7)
        for t, frame in enumerate(tensor_to_frames(ex[key][0])):
            axes[r, t + 1].imshow(frame)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("o_t", fontsize=8)
    for t in range(T):
        axes[0, t + 1].set_title(f"o_t+{t + 1}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    from gr2_sim.objectives import CHANGE_THRESHOLD

    common.check_positive(args, "windows", "ddim_steps", "batch_size")
    threshold = CHANGE_THRESHOLD if args.threshold is None else args.threshold
    if not 0 < threshold < 2:
        raise UserError(f"--threshold must be in (0, 2) (frames are in [-1, 1]), got {threshold}")
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = common.existing_file(args.data, "--data")
    results, examples = [], []
    for r in args.run:
        result, ex = score(Path(r), data, args.windows, args.ddim_steps, threshold, args.seed, args.split,
                           args.batch_size)
        results.append(result)
        examples.append((r, ex))
        for name in ("ddim", "one-step"):
            q = result["readouts"][name]["ratio_to_copy"]
            if q["ratio"] is not None:
                w = result["readouts"][name]["full_frame_ratio_to_copy"]
                verdict = "beats copy" if result["readouts"][name]["beats_copy"] else "does not beat copy"
                print(f"{r}: {name} changed-pixel MSE / copy = {q['ratio']:.3f} "
                      f"(95% CI {q['ci95'][0]:.3f}-{q['ci95'][1]:.3f}, {q['n']} windows); whole frame / copy = "
                      f"{w['ratio']:.3f} ({w['ci95'][0]:.3f}-{w['ci95'][1]:.3f}): {verdict}")
    figure = plot(examples, out / "video_quality.png")
    common.write_summary(out, args, started, {"data": str(data), "split": args.split, "threshold": threshold,
                                              "results": results, "figures": [figure.name]})
    return 0
