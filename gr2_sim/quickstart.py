"""``gr2-sim quickstart``: the whole pipeline on small defaults, on a laptop CPU.

    synthetic physics video -> phase 1 (video pre-training)
    robot video, no actions -> phase 2 (robot video)
    expert demonstrations   -> phase 3 (video + actions), from phase 2

Every step is an ordinary ``gr2-sim`` command (printed as it runs, so you can rerun any of them), every
step is skipped when its output already exists, and a killed quickstart resumes where it stopped.
Writes ``OUT/report.md`` with the loss curves.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from gr2_sim.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for data, runs and the report")
    p.add_argument("--env", default="GR2Sim/PickPlace-v0", help="task to learn")
    p.add_argument("--clips", type=int, default=300, help="synthetic clips (phase 1)")
    p.add_argument("--episodes", type=int, default=200, help="robot video episodes and demos (phases 2-3)")
    p.add_argument("--steps", type=int, nargs=3, default=[600, 400, 1200], metavar=("P1", "P2", "P3"),
                   help="training steps of the three phases")
    p.add_argument("--preset", default="small")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")


def plan(args: argparse.Namespace) -> list[tuple[str, Path, list[str]]]:
    """(name, output that marks it done, gr2-sim argv) for every step."""
    out = Path(args.out)
    data, runs = out / "data", out / "runs"
    s1, s2, s3 = (str(s) for s in args.steps)
    common = ["--preset", args.preset, "--device", args.device]
    return [
        ("synthetic video", data / "synth.hdf5",
         ["synth", "--clips", str(args.clips), "--frames", "16", "--out", str(data / "synth.hdf5"),
          "--workers", str(args.workers)]),
        ("robot video", data / "robot_video.hdf5",
         ["collect", "--env", args.env, "--episodes", str(args.episodes), "--no-actions", "--seed", "100000",
          "--out", str(data / "robot_video.hdf5"), "--workers", str(args.workers)]),
        ("demonstrations", data / "demos.hdf5",
         ["collect", "--env", args.env, "--episodes", str(args.episodes), "--noise", "0.05",
          "--out", str(data / "demos.hdf5"), "--workers", str(args.workers)]),
        ("phase 1: video pre-training", runs / "phase1",
         ["train", "--stage", "video", "--data", str(data / "synth.hdf5"), "--out", str(runs / "phase1"),
          "--steps", s1, *common]),
        ("phase 2: robot video", runs / "phase2",
         ["train", "--stage", "robot-video", "--data", str(data / "robot_video.hdf5"), "--out",
          str(runs / "phase2"), "--init", str(runs / "phase1"), "--steps", s2, "--device", args.device]),
        ("phase 3: video + actions", runs / "phase3",
         ["train", "--stage", "action", "--data", str(data / "demos.hdf5"), "--out", str(runs / "phase3"),
          "--init", str(runs / "phase2"), "--steps", s3, "--device", args.device]),
    ]


def is_done(output: Path, steps: int | None) -> bool:
    if output.suffix == ".hdf5":
        return output.exists() and output.with_name(output.name + ".done").exists()
    state = output / "trainer_state.pt"
    if not state.exists():
        return False
    from gr2_sim.checkpoint import load_trainer_state

    return int(load_trainer_state(output)["step"]) >= (steps or 0)


def run(args: argparse.Namespace) -> int:
    from gr2_sim.cli import main as gr2

    if any(s < 1 for s in args.steps):
        raise UserError(f"--steps must all be >= 1, got {args.steps}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = plan(args)
    timings = {}
    for i, (name, output, argv) in enumerate(steps, 1):
        n_steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else None
        print(f"\n[{i}/{len(steps)}] {name}\n$ gr2-sim {shlex.join(argv)}", flush=True)
        if is_done(output, n_steps):
            print("  done already: skipped")
            continue
        if argv[0] == "train" and (output / "trainer_state.pt").exists():
            argv = [*argv, "--resume"]
        start = time.perf_counter()
        code = gr2(argv)
        if code != 0:
            raise UserError(f"step '{name}' failed (exit {code}); fix the error above and rerun the quickstart")
        timings[name] = time.perf_counter() - start
        if output.suffix == ".hdf5":
            output.with_name(output.name + ".done").write_text("complete\n")
    report = write_report(out, steps, timings)
    print(f"\nquickstart complete: {report}")
    return 0


def write_report(out: Path, steps, timings: dict[str, float]) -> Path:
    from gr2_sim.plots import plot_losses

    runs = [output for _, output, argv in steps if argv[0] == "train"]
    figure = plot_losses(runs, out / "losses.png")
    lines = ["# gr2-sim quickstart report", "", "| step | command | wall time (s) |", "|---|---|---|"]
    for name, _, argv in steps:
        t = timings.get(name)
        lines.append(f"| {name} | `gr2-sim {shlex.join(argv)}` | {'skipped' if t is None else f'{t:.0f}'} |")
    lines += ["", f"![losses]({figure.name})", ""]
    for run in runs:
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        val = [r for r in records if "val_video_mse" in r]
        if val:
            last = val[-1]
            extra = f", held-out action MSE {last['val_action_mse']:.4f}" if "val_action_mse" in last else ""
            lines.append(f"- {run.name}: held-out video MSE {last['val_video_mse']:.4f}{extra} at step {last['step']}")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
