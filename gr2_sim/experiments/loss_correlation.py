"""loss-correlation: during phase 3, does the video error track the action error, and either track success?

One phase-3 run (``--stage action``, from scratch or from ``--init``) logs the training video and action losses
and, every ``eval_every`` steps, the held-out video MSE and action MSE (held-out demos, env action units). At
``--checkpoints`` evenly spaced steps the EMA weights are rolled out on ``--env`` test seeds (success rate with a
Wilson interval). Reported: Pearson and Spearman correlations of the training curves (raw, and of their
step-to-step changes, which removes the shared downward trend), of the held-out curves, and across checkpoints of
held-out video error vs action error vs success, the latter with two-sided permutation p-values (exact for up
to 8 checkpoints: with 6, |rho| = 1 is the strongest evidence available, p = 2/720).

How the checkpoints are kept. ``gr2_sim/train.py`` follows warm-up + cosine decay over the run's total
``steps``, so training to s1 and then resuming with a larger ``--steps`` would change the schedule: the checkpoints
would not be points of one run. Instead ONE run is trained with the full schedule and ``keep_every`` (``gr2-sim
train --keep-every``) keeps its weights at ``RUN/checkpoints/step_<s>/`` (``ckpt_every = steps / checkpoints``),
each a run folder that ``GR2Policy.from_checkpoint`` loads. A killed experiment resumes the run from its last
checkpoint (train.py's resume reproduces the uninterrupted run) and keeps the copies made before it; evaluated
checkpoints (``eval/eval.json``) are skipped.

Outputs: ``DIR/summary.json``, ``DIR/loss_correlation.png`` (both losses on one graph, twin log axes; success
at the checkpoints), ``DIR/runs/phase3/``, ``DIR/runs/phase3/checkpoints/step_<s>/eval/eval.json``.

CPU budget at the defaults (Reach, 200 demos, ``small``, 3000 steps, 6 checkpoints x 50 episodes): 54 minutes
measured with one torch thread while two other trainings shared the 2 cores (docs/results.md); the training is
most of it (3000 steps x 32 samples at the ``small`` preset's ~87 samples/s on 2 idle cores is ~18 minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gr2_sim.errors import UserError
from gr2_sim.experiments import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_common_options(p)
    common.add_data_options(p, env="GR2Sim/Reach-v0", demos=200)
    p.add_argument("--steps", type=int, default=3000, help="phase-3 training steps (one cosine schedule)")
    p.add_argument("--checkpoints", type=int, default=6, help="evenly spaced checkpoints rolled out")
    p.add_argument("--val-per-checkpoint", type=int, default=5,
                   help="held-out evaluations between two checkpoints (the curves' resolution)")
    p.add_argument("--episodes", type=int, default=50, help="rollout episodes per checkpoint")
    p.add_argument("--mode", default="head", choices=("head", "denoise"), help="policy readout for rollouts")
    p.add_argument("--init", default=None, help="start phase 3 from this run (e.g. a phase-2 run); default scratch")


def schedule(steps: int, checkpoints: int, val_per_checkpoint: int) -> tuple[int, int]:
    """(ckpt_every, eval_every): eval_every divides ckpt_every, so every checkpoint has held-out losses."""
    ckpt_every = max(1, steps // checkpoints)
    target = max(1, ckpt_every // val_per_checkpoint)
    eval_every = max(d for d in range(1, target + 1) if ckpt_every % d == 0)
    return ckpt_every, eval_every


def evaluate_checkpoints(args, run_dir: Path) -> list[dict]:
    from gr2_sim.checkpoint import kept_checkpoints
    from gr2_sim.evaluate import evaluate_run

    rows = []
    for step, folder in kept_checkpoints(run_dir):
        eval_json = folder / "eval" / "eval.json"
        if not eval_json.exists():
            evaluate_run(folder, args.env, episodes=args.episodes, mode=args.mode, out_dir=folder / "eval",
                         device=args.device, seed=args.seed, progress=True)
        agg = json.loads(eval_json.read_text())["aggregated"]
        rows.append({"step": step, "success_rate": agg["success_rate"], "success_ci95": agg["success_ci95"],
                     "successes": agg["successes"], "episodes": agg["episodes"]})
    return rows


def differences(values: list[float]) -> list[float]:
    return [b - a for a, b in zip(values, values[1:], strict=False)]


def analyse(records: list[dict], checkpoints: list[dict]) -> dict:
    """Correlations of the training curves, the held-out curves, and across checkpoints (see the docstring)."""
    train = [r for r in records if "video_loss" in r and "action_loss" in r]
    val = [r for r in records if "val_video_mse" in r and "val_action_mse" in r]
    video, action = [r["video_loss"] for r in train], [r["action_loss"] for r in train]
    val_at = {r["step"]: r for r in val}
    for row in checkpoints:
        row["val_video_mse"] = val_at.get(row["step"], {}).get("val_video_mse")
        row["val_action_mse"] = val_at.get(row["step"], {}).get("val_action_mse")
    cells = [r for r in checkpoints if r["val_video_mse"] is not None]
    series = {"val_video_mse": [r["val_video_mse"] for r in cells],
              "val_action_mse": [r["val_action_mse"] for r in cells],
              "success_rate": [r["success_rate"] for r in cells]}
    pairs = [("val_video_mse", "val_action_mse"), ("val_video_mse", "success_rate"),
             ("val_action_mse", "success_rate")]
    return {
        "training_curves": {"video_loss_vs_action_loss": common.correlations(video, action),
                            "step_changes": common.correlations(differences(video), differences(action))},
        "held_out_curves": {"val_video_mse_vs_val_action_mse": common.correlations(
            [r["val_video_mse"] for r in val], [r["val_action_mse"] for r in val])},
        "across_checkpoints": {f"{a}_vs_{b}": common.correlations(series[a], series[b], p_values=True)
                               for a, b in pairs},
        "note": "null correlations are undefined: fewer than 3 points, or a constant series (e.g. success 0 "
                "at every checkpoint)",
    }


def run(args: argparse.Namespace) -> int:
    from gr2_sim.plots import plot_loss_correlation, read_metrics

    common.check_positive(args, "steps", "checkpoints", "val_per_checkpoint", "episodes", "demos", "batch_size")
    if args.checkpoints > args.steps:
        raise UserError(f"--checkpoints {args.checkpoints} is more than --steps {args.steps}")
    started = time.perf_counter()
    out = Path(args.out)
    data = common.demo_data(args, out)
    run_dir = out / "runs" / "phase3"
    ckpt_every, eval_every = schedule(args.steps, args.checkpoints, args.val_per_checkpoint)
    common.train_run(run_dir, stage="action", data=str(data), demos=args.demos, steps=args.steps,
                     batch_size=args.batch_size, seed=args.seed, device=args.device, init=args.init,
                     preset=None if args.init else args.preset, ckpt_every=ckpt_every, eval_every=eval_every,
                     keep_every=ckpt_every, log_every=min(25, eval_every))
    checkpoints = evaluate_checkpoints(args, run_dir)
    records = read_metrics(run_dir)
    results = analyse(records, checkpoints)
    figure = plot_loss_correlation(records, checkpoints, out / "loss_correlation.png")
    common.write_summary(out, args, started, {
        "env": args.env, "data": str(data), "run": str(run_dir), "ckpt_every": ckpt_every, "eval_every": eval_every,
        "checkpoints": checkpoints, "correlations": results, "figures": [figure.name],
        "units": "training losses: normalised (video: the diffusion target's MSE; action: MSE of normalised "
                 "actions); val_video_mse: held-out denoising MSE; val_action_mse: held-out MSE in env action units",
    })
    return 0
