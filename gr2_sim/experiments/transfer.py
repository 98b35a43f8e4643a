"""transfer: does video pre-training make phase 3 learn from fewer demonstrations?

Runs the demo-count sweep (``gr2_sim/sweep.py``, in ``DIR/sweep``: phases 1-2 once, then phase 3 from scratch
and from phase 2 for every demo count and seed, each rolled out on the same test seeds) and adds, per demo count
(seeds pooled: successes and episodes summed over seeds):

- the success rate of each variant with its 95% Wilson interval;
- pre-trained minus scratch with Newcombe's 95% interval (``gr2_sim/stats.py``);
- the sample-efficiency gain: how many demos scratch needs to reach pre-trained's success at the smallest demo
  count, by linear interpolation of scratch's success on a log-demos axis, divided by that smallest count; or
  "not reached" when scratch stays below it at every count (the gain is then larger than max/min demos). The
  same at every other demo count in ``sample_efficiency.per_demos``.

Outputs: ``DIR/summary.json``, ``DIR/transfer.png`` (success vs demos with intervals; the difference with its
interval), and the sweep's own ``DIR/sweep/results.{json,md}``, ``success_vs_demos.png`` and run folders.

CPU budget at the defaults (PickPlace, 50/200/1000 demos, ``small``, 3000 phase-3 steps, 1 seed, 100 episodes per
cell): about 2.5 hours on 2 cores -- 7 trainings of ~15 min (phases 1-2 together ~14 min) plus data and rollouts
(estimated from the README's throughput and the quickstart's timing; not timed end to end). ``--seeds 2`` adds
the six phase-3 runs again (~1.5 h).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from gr2_sim.experiments import common

VARIANTS = ("scratch", "pretrained")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_common_options(p)
    p.add_argument("--env", default="GR2Sim/PickPlace-v0")
    p.add_argument("--demos", type=int, nargs="+", default=[50, 200, 1000], help="demo counts (at least one)")
    p.add_argument("--steps", type=int, default=3000, help="phase-3 steps, the same for every run")
    p.add_argument("--pretrain-steps", type=int, nargs=2, default=[2000, 1000], metavar=("P1", "P2"))
    p.add_argument("--clips", type=int, default=2000, help="synthetic clips for phase 1")
    p.add_argument("--robot-episodes", type=int, default=500, help="robot video episodes for phase 2")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run")
    p.add_argument("--videos", type=int, default=0, help="rollout videos per run")
    p.add_argument("--mode", default="head", choices=("head", "denoise"), help="policy readout")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per cell (0 .. N-1); 2 when time allows")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config override for every run (as gr2-sim train --set)")


def sweep_args(args: argparse.Namespace, out: Path) -> argparse.Namespace:
    return argparse.Namespace(env=args.env, env_kwargs="{}", demos=list(args.demos), pretrain="both", out=str(out), steps=args.steps,
                              pretrain_steps=list(args.pretrain_steps), clips=args.clips,
                              robot_episodes=args.robot_episodes, episodes=args.episodes, videos=args.videos,
                              mode=args.mode, seeds=args.seeds, baselines="none", threads=0, preset=args.preset,
                              batch_size=args.batch_size, workers=args.workers, device=args.device,
                              overrides=list(args.overrides), budget="steps", jobs=1, video_batch=None,
                              labelled_video=False, idm_steps=1)


def pooled_cells(rows: list[dict]) -> list[dict]:
    """One cell per (variant, demos): successes and episodes summed over seeds, with a Wilson interval."""
    from gr2_sim.stats import wilson_interval

    cells = []
    for variant in VARIANTS:
        for n in sorted({r["demos"] for r in rows if r["variant"] == variant}):
            rs = [r for r in rows if r["variant"] == variant and r["demos"] == n]
            s, e = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
            cells.append({"variant": variant, "demos": n, "seeds": sorted(r["seed"] for r in rs), "successes": s,
                          "episodes": e, "success_rate": s / e, "success_ci95": list(wilson_interval(s, e)),
                          "per_seed_success": [r["success_rate"] for r in sorted(rs, key=lambda r: r["seed"])]})
    return cells


def differences(cells: list[dict]) -> list[dict]:
    """Pre-trained minus scratch at each demo count both have, with Newcombe's 95% interval."""
    from gr2_sim.stats import newcombe_difference

    by = {(c["variant"], c["demos"]): c for c in cells}
    out = []
    for n in sorted({c["demos"] for c in cells}):
        if ("pretrained", n) in by and ("scratch", n) in by:
            pre, scr = by[("pretrained", n)], by[("scratch", n)]
            d, lo, hi = newcombe_difference(pre["successes"], pre["episodes"], scr["successes"], scr["episodes"])
            out.append({"demos": n, "difference": d, "ci95": [lo, hi], "excludes_zero": lo > 0 or hi < 0})
    return out


def demos_to_reach(points: list[tuple[int, float]], target: float) -> float | None:
    """Demos at which the curve ``points`` (demos, rate; sorted) first reaches ``target``, interpolating the
    rate linearly in log(demos); None when it never does."""
    if not points:
        return None
    if points[0][1] >= target:
        return float(points[0][0])
    for (n1, r1), (n2, r2) in zip(points, points[1:], strict=False):
        if r1 < target <= r2:
            frac = (target - r1) / (r2 - r1)
            return math.exp(math.log(n1) + frac * (math.log(n2) - math.log(n1)))
    return None


def efficiency_at(scratch: list[tuple[int, float]], n0: int, target: float) -> dict:
    """How many demos scratch needs to match pre-trained's success ``target`` at ``n0`` demos, and the ratio."""
    needed = demos_to_reach(scratch, target)
    result = {"demos": n0, "pretrained_success": target, "scratch_demos_needed": needed}
    if target == 0:
        result.update(status="no gain measurable", gain=None, note=f"pre-trained succeeds 0 times at {n0} demos")
    elif needed is None:
        result.update(status="not reached", gain=None, gain_at_least=scratch[-1][0] / n0,
                      note=f"scratch stays below {target:.3f} up to {scratch[-1][0]} demos")
    else:
        result.update(status="reached", gain=needed / n0,
                      note="demos scratch needs (log-demos interpolation) / demos of pre-trained; point estimate "
                           "without an interval")
    return result


def sample_efficiency(cells: list[dict]) -> dict:
    """The gain at the smallest demo count (the lesson's question, at the top level), and at every count in
    ``per_demos``."""
    scratch = sorted((c["demos"], c["success_rate"]) for c in cells if c["variant"] == "scratch")
    pre = sorted((c["demos"], c["success_rate"]) for c in cells if c["variant"] == "pretrained")
    if not scratch or not pre:
        return {"status": "needs both variants"}
    per_demos = [efficiency_at(scratch, n, rate) for n, rate in pre]
    headline = dict(per_demos[0])
    headline["smallest_demos"] = headline.pop("demos")
    headline["pretrained_success_at_smallest"] = headline.pop("pretrained_success")
    return {**headline, "per_demos": per_demos}


def run(args: argparse.Namespace) -> int:
    from gr2_sim import sweep
    from gr2_sim.plots import plot_transfer

    common.check_positive(args, "demos", "steps", "pretrain_steps", "clips", "robot_episodes", "episodes", "seeds",
                          "batch_size")
    started = time.perf_counter()
    out = Path(args.out)
    sweep.run(sweep_args(args, out / "sweep"))
    results = json.loads((out / "sweep" / "results.json").read_text())
    wanted = set(args.demos), set(range(args.seeds))
    rows = [r for r in results["rows"] if r["demos"] in wanted[0] and r["seed"] in wanted[1]]
    cells = pooled_cells(rows)
    diffs = differences(cells)
    figure = plot_transfer(cells, diffs, out / "transfer.png")
    common.write_summary(out, args, started, {
        "env": args.env, "sweep": str(out / "sweep"), "cells": cells, "pretrained_minus_scratch": diffs,
        "sample_efficiency": sample_efficiency(cells), "figures": [figure.name, "sweep/success_vs_demos.png"],
    })
    return 0
