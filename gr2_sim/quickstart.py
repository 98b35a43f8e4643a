"""``gr2-sim quickstart``: the whole pipeline on small defaults, on a laptop CPU.

    synthetic physics video -> phase 1 (video pre-training)
    robot video, no actions -> phase 2 (robot video)
    expert demonstrations   -> phase 3 (video + actions), from scratch and from phase 2, per demo count
    rollouts on test seeds  -> success table with 95% intervals, plot, videos with the imagined future

It is a small ``gr2-sim sweep`` plus a report: every piece is skipped when its output exists, so a killed
quickstart resumes where it stopped. Writes ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from gr2_sim.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for data, runs and the report")
    # Defaults sized for <= 15 minutes on 2 CPU cores: Reach (short episodes, quick rollouts), one demo count,
    # scratch vs pre-trained. PickPlace and the 50 / 200 / 1000 curve are `gr2-sim sweep`'s job (hours)
    p.add_argument("--env", default="GR2Sim/Reach-v0", help="task to learn")
    p.add_argument("--demos", type=int, nargs="+", default=[200], help="demo counts to compare")
    p.add_argument("--steps", type=int, default=800, help="phase-3 steps per run")
    p.add_argument("--pretrain-steps", type=int, nargs=2, default=[300, 200], metavar=("P1", "P2"))
    p.add_argument("--clips", type=int, default=300, help="synthetic clips (phase 1)")
    p.add_argument("--robot-episodes", type=int, default=200, help="robot video episodes (phase 2)")
    p.add_argument("--episodes", type=int, default=30, help="evaluation episodes per run")
    p.add_argument("--preset", default="small")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")


def sweep_argv(args: argparse.Namespace) -> list[str]:
    return ["sweep", "--env", args.env, "--demos", *map(str, args.demos), "--pretrain", "both",
            "--out", str(args.out), "--steps", str(args.steps),
            "--pretrain-steps", *map(str, args.pretrain_steps), "--clips", str(args.clips),
            "--robot-episodes", str(args.robot_episodes), "--episodes", str(args.episodes), "--videos", "1",
            "--preset", args.preset, "--workers", str(args.workers), "--device", args.device,
            "--seeds", "1", "--baselines", "bc", "--budget", "steps", "--threads", "0"]


def run(args: argparse.Namespace) -> int:
    from gr2_sim.cli import main as gr2

    if args.steps < 1 or any(s < 1 for s in args.pretrain_steps):
        raise UserError(f"--steps and --pretrain-steps must be >= 1, got {args.steps} and {args.pretrain_steps}")
    argv = sweep_argv(args)
    print("$ gr2-sim " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = gr2(argv)
    if code != 0:
        raise UserError(f"the sweep stopped (exit {code}); fix the error above and rerun the quickstart: "
                        f"finished pieces are kept")
    gif = imagined_future_gif(Path(args.out), args.env, args.device)
    report = write_report(Path(args.out), argv, time.perf_counter() - start, gif)
    print(f"\nquickstart complete: {report}")
    return 0


def imagined_future_gif(out: Path, env: str, device: str) -> Path | None:
    """One test episode of the pre-trained policy read out with ``denoise``, so that the model's predicted
    future frames are drawn beside the camera: ``OUT/rollout.gif`` (skipped when present)."""
    import imageio.v2 as imageio

    from gr2_sim.cli import main as gr2

    gif = out / "rollout.gif"
    if gif.exists():
        return gif
    runs = sorted((out / "runs").glob("pretrained_*")) or sorted((out / "runs").glob("scratch_*"))
    if not runs:
        return None
    eval_dir = out / "imagined"
    code = gr2(["eval", "--ckpt", str(runs[-1]), "--env", env, "--mode", "denoise", "--episodes", "1",
                "--videos", "1", "--out", str(eval_dir), "--device", device])
    videos = sorted((eval_dir / "videos").glob("*")) if code == 0 else []
    if not videos:
        return None
    if videos[0].suffix == ".gif":
        shutil.copyfile(videos[0], gif)
    else:
        frames = list(imageio.mimread(videos[0], memtest=False))
        tmp = gif.with_name(".rollout.tmp.gif")
        imageio.mimsave(tmp, frames, duration=100, loop=0)
        tmp.replace(gif)
    return gif


def write_report(out: Path, argv: list[str], wall_s: float, gif: Path | None = None) -> Path:
    from gr2_sim.plots import plot_losses

    results = json.loads((out / "results.json").read_text())
    runs = out / "runs"
    phase3 = sorted(p for p in runs.iterdir() if p.name.startswith(("scratch_", "pretrained_")))
    losses = plot_losses([runs / "phase1", runs / "phase2", *phase3[-2:]], out / "losses.png")
    lines = ["# gr2-sim quickstart report", "",
             f"`gr2-sim {' '.join(argv)}` — {wall_s / 60:.1f} min of work in this invocation "
             f"(pieces done earlier are skipped).", "",
             (out / "results.md").read_text().split("\n", 2)[2], "![success vs demos](success_vs_demos.png)", "",
             "## Losses", "", f"![losses]({losses.name})", "", "## Rollouts", "",
             *([f"![the pre-trained policy, its predicted future beside the camera]({gif.name})", "",
                "The pre-trained policy on one test episode, read out with `--mode denoise`: the model's "
                "predicted future frames beside what the camera saw.", ""] if gif is not None else []),
             "The camera view of the first test episode of each run (with `gr2-sim eval --mode denoise` the "
             "model's predicted future frames are drawn beside it).", ""]
    for row in results["rows"]:
        videos = sorted((Path(row["run"]) / "eval" / "videos").glob("*"))
        if videos:
            target = out / "videos" / f"{Path(row['run']).name}{videos[0].suffix}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(videos[0], target)
            lines.append(f"- {row['variant']}, {row['demos']} demos: [{target.name}](videos/{target.name})")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
