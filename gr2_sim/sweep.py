"""``gr2-sim sweep``: success rate vs number of demonstrations, with and without video pre-training.

For each demo count N: phase 3 from scratch and phase 3 from the phase-2 checkpoint (phases 1 and 2 are
trained once, when absent), the same step budget for every run, then evaluation on held-out test seeds.
Every piece is skipped when its result exists, so a killed sweep resumes where it stopped::

    DIR/data/{synth,robot_video,demos}.hdf5     collected once
    DIR/runs/phase1, phase2                      pre-training, once
    DIR/runs/{scratch,pretrained}_N{n}_s{seed}/  phase 3 runs, each with eval/eval.json
    DIR/results.json, results.md, success_vs_demos.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from gr2_sim.data import VALID_EVERY
from gr2_sim.errors import UserError
from gr2_sim.io import atomic_write_text

PRETRAIN = {"both": ("scratch", "pretrained"), "yes": ("pretrained",), "no": ("scratch",)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="GR2Sim/PickPlace-v0",
                   help="Gymnasium env id; 'module:ns/Id-v0' imports module first (then pass --expert for collection)")
    p.add_argument("--expert", default=None, metavar="MODULE:FUNCTION",
                   help="expert factory for collection (as for gr2-sim collect; default: the gr2-sim tasks' experts)")
    p.add_argument("--env-kwargs", default="{}",
                   help="JSON object of gym.make keyword arguments for collection and evaluation, e.g. "
                        "'{\"object_state\": true}'")
    p.add_argument("--demos", type=int, nargs="+", default=[50, 200, 1000])
    p.add_argument("--pretrain", choices=tuple(PRETRAIN), default="both")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000, help="phase-3 steps, the same for every run")
    p.add_argument("--pretrain-steps", type=int, nargs=2, default=[2000, 1000], metavar=("P1", "P2"))
    p.add_argument("--clips", type=int, default=2000, help="synthetic clips for phase 1")
    p.add_argument("--robot-episodes", type=int, default=500, help="robot video episodes for phase 2")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run")
    p.add_argument("--videos", type=int, default=2, help="rollout videos per run (first episodes)")
    p.add_argument("--mode", default="head", help="policy readout: head | denoise")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds per cell")
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config override for every run, as for gr2-sim train (e.g. --set keypoints=32)")
    from gr2_sim.collect import add_env_source_arguments

    add_env_source_arguments(p)


def env_source(args) -> tuple[tuple[str, ...], str | None, str | None]:
    """``(imports, success_key, expert)`` of a sweep's arguments; absent from a Namespace built by another
    command (e.g. ``experiment transfer``): none."""
    return (tuple(getattr(args, "imports", None) or ()), getattr(args, "success_key", None),
            getattr(args, "expert", None))


def env_source_argv(args) -> list[str]:
    """The ``--import`` / ``--success-key`` / ``--expert`` options of this sweep, for ``gr2-sim collect``."""
    imports, success_key, expert = env_source(args)
    argv = [item for module in imports for item in ("--import", module)]
    if success_key:
        argv += ["--success-key", success_key]
    if expert:
        argv += ["--expert", expert]
    return argv


def demos_needed(n_train: int) -> int:
    """Episodes to collect so that the train split (all but every VALID_EVERY-th) holds ``n_train``."""
    return math.ceil(n_train * VALID_EVERY / (VALID_EVERY - 1)) + 1


def ensure_data(args, data: Path) -> dict[str, Path]:
    from gr2_sim.cli import main as gr2

    paths = {"synth": data / "synth.hdf5", "robot_video": data / "robot_video.hdf5", "demos": data / "demos.hdf5"}
    jobs = []
    if "pretrained" in PRETRAIN[args.pretrain]:
        jobs += [("synth", ["synth", "--clips", str(args.clips), "--frames", "16"]),
                 ("robot_video", ["collect", "--env", args.env, "--env-kwargs", args.env_kwargs, "--episodes",
                                  str(args.robot_episodes), "--no-actions", "--seed", "500000", *env_source_argv(args)])]
    jobs.append(("demos", ["collect", "--env", args.env, "--env-kwargs", args.env_kwargs, "--episodes",
                           str(demos_needed(max(args.demos))), "--noise", "0.05", *env_source_argv(args)]))
    for name, argv in jobs:
        done = paths[name].with_name(paths[name].name + ".done")
        if done.exists():
            continue
        start = time.perf_counter()
        code = gr2([*argv, "--out", str(paths[name]), "--workers", str(args.workers)])
        if code != 0:
            raise UserError(f"collecting {name} failed (exit {code}); see the error above, then rerun the sweep")
        atomic_write_text(done, json.dumps({"complete": True, "seconds": round(time.perf_counter() - start, 2)}))
    return paths


def _seconds_done(done: Path) -> float | None:
    """Seconds recorded in a data ``.done`` marker; None for a marker written before timings were kept."""
    try:
        return float(json.loads(done.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def timing(out: Path, rows: list[dict]) -> dict:
    """Compute seconds of every stage of the sweep so far, each as measured when it ran (resumes included).

    ``data`` (collection), ``phase1``/``phase2`` (training wall_s over all sessions), ``phase3`` (sum over the
    runs), ``eval`` (sum over the runs), ``total``; a stage that has not run, or whose time was not recorded,
    is None and left out of the total. The total is the lesson's cost on an otherwise idle machine only if
    nothing else ran beside it.
    """
    from gr2_sim.checkpoint import TRAINER_STATE, load_trainer_state

    def train_s(run: Path) -> float | None:
        state = run / TRAINER_STATE
        return float(load_trainer_state(run).get("wall_s", 0.0)) if state.exists() else None

    data = [_seconds_done(p) for p in sorted((out / "data").glob("*.done"))]
    parts = {"data": sum(data) if data and None not in data else None,
             "phase1": train_s(out / "runs" / "phase1"), "phase2": train_s(out / "runs" / "phase2")}
    phase3 = [train_s(Path(r["run"])) for r in rows]
    parts["phase3"] = sum(phase3) if phase3 and None not in phase3 else None
    parts["eval"] = sum(r["wall_time_s"] for r in rows) if rows else None
    parts["total"] = sum(v for v in parts.values() if v is not None)
    return {k: None if v is None else round(v, 1) for k, v in parts.items()}


DATA_FIELDS = ("img_size", "action_dim", "state_dim")  # set by each run from its data


def pinned_model(args, out: Path) -> dict:
    """The model config every run of this sweep uses, fixed at its first start in ``DIR/model.json``.

    Scratch runs build their model from it and phase 1 too (pre-trained runs inherit it from phase 2), so a
    sweep resumed after gr2-sim's defaults changed still compares like with like. A sweep folder started
    before model.json existed takes phase 1's config. Passing other ``--set`` values to a started sweep is an
    error: use a new ``--out``.
    """
    from gr2_sim.checkpoint import load_model_config
    from gr2_sim.config import make_config
    from gr2_sim.train import parse_overrides

    path, phase1 = out / "model.json", out / "runs" / "phase1" / "config.json"
    asked = parse_overrides(args.overrides)
    if path.exists():
        pinned = json.loads(path.read_text())
    else:
        source = load_model_config(phase1.parent) if phase1.exists() else make_config(args.preset, **asked)
        pinned = {k: v for k, v in source.to_dict().items() if k not in DATA_FIELDS}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(pinned, indent=2))
    clash = {k: (pinned.get(k), v) for k, v in asked.items() if pinned.get(k) != v}
    if clash:
        raise UserError(f"{out} was started with a different model ({path}): "
                        + ", ".join(f"{k}={a!r} there, {b!r} asked" for k, (a, b) in clash.items())
                        + "; rerun with its settings or choose a new --out")
    return pinned


def train_if_needed(run: Path, **kwargs) -> Path:
    from gr2_sim.checkpoint import TRAINER_STATE, load_trainer_state
    from gr2_sim.train import TrainConfig, train

    state = run / TRAINER_STATE
    if state.exists() and int(load_trainer_state(run)["step"]) >= kwargs["steps"]:
        return run
    return train(TrainConfig(out=str(run), resume=state.exists(), **kwargs))


def run_cell(args, paths, runs: Path, init: str | None, variant: str, n: int, seed: int) -> dict:
    from gr2_sim.evaluate import evaluate_run

    run = runs / f"{variant}_N{n}_s{seed}"
    eval_json = run / "eval" / "eval.json"
    if not eval_json.exists():
        train_if_needed(run, stage="action", data=str(paths["demos"]), demos=n, steps=args.steps,
                        batch_size=args.batch_size, seed=seed, device=args.device,
                        preset=None if init else args.preset, init=init, overrides=None if init else args.model)
        evaluate_run(run, args.env, episodes=args.episodes, mode=args.mode, out_dir=run / "eval", device=args.device,
                     videos=args.videos, progress=True, imports=env_source(args)[0], success_key=env_source(args)[1])
    result = json.loads(eval_json.read_text())["aggregated"]
    return {"variant": variant, "demos": n, "seed": seed, "run": str(run), **result}


def run(args: argparse.Namespace) -> int:
    if any(n < 1 for n in args.demos):
        raise UserError(f"--demos must all be >= 1, got {args.demos}")
    from gr2_sim.collect import parse_env_kwargs
    from gr2_sim.obs_adapter import check_env_id

    parse_env_kwargs(args.env_kwargs)  # a bad --env-kwargs fails here, before anything is collected
    check_env_id(args.env, env_source(args)[0])  # and so does an unknown env id or --import
    out = Path(args.out)
    runs = out / "runs"
    args.model = pinned_model(args, out)
    paths = ensure_data(args, out / "data")
    init = None
    if "pretrained" in PRETRAIN[args.pretrain]:
        p1 = train_if_needed(runs / "phase1", stage="video", data=str(paths["synth"]), preset=args.preset,
                             steps=args.pretrain_steps[0], batch_size=args.batch_size, device=args.device,
                             overrides=args.model)
        p2 = train_if_needed(runs / "phase2", stage="robot-video", data=str(paths["robot_video"]), init=str(p1),
                             steps=args.pretrain_steps[1], batch_size=args.batch_size, device=args.device)
        init = str(p2)
    rows = []
    for n in sorted(args.demos):
        for variant in PRETRAIN[args.pretrain]:
            for seed in args.seeds:
                rows.append(run_cell(args, paths, runs, init if variant == "pretrained" else None, variant, n, seed))
                write_results(out, rows, args)
    print(f"sweep complete: {out / 'results.md'}")
    return 0


def write_results(out: Path, rows: list[dict], args) -> None:
    from gr2_sim.plots import plot_success_vs_demos

    seconds = timing(out, rows)
    atomic_write_text(out / "results.json", json.dumps({"env": args.env, "steps": args.steps, "mode": args.mode,
                                                         "episodes": args.episodes, "rows": rows,
                                                         "seconds": seconds}, indent=2))
    lines = [f"# Success vs demonstrations on {args.env}", "",
             f"Phase 3: {args.steps} steps for every run; evaluation: {args.episodes} test episodes, "
             f"`{args.mode}` readout; 95% Wilson intervals.", "",
             "| demos | variant | seed | success | 95% CI | mean length | goal distance, start -> end (cm) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["success_ci95"]
        goal = r.get("goal_distance")  # None for envs that do not report it, and for evaluations before it existed
        distance = f"{100 * goal['start_mean']:.1f} -> {100 * goal['end_mean']:.1f}" if goal else "-"
        lines.append(f"| {r['demos']} | {r['variant']} | {r['seed']} | {r['success_rate']:.2f} | "
                     f"[{lo:.2f}, {hi:.2f}] | {r['mean_length']:.1f} | {distance} |")
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items() if v is not None and k != "total")
    lines += ["", f"Compute time so far: {seconds['total'] / 60:.1f} min ({parts}; minutes, each stage as measured "
              "when it ran: the lesson's cost on an idle machine only if nothing else ran beside it)."]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    plot_success_vs_demos(rows, out / "success_vs_demos.png")
