"""What every experiment shares: its data and runs (made once, skipped when present), statistics, and the summary.

Layout of an experiment folder::

    DIR/data/*.hdf5 (+ .done)     datasets the experiment collected itself (absent when --data/--synth-data given)
    DIR/runs/<name>/              training runs (resumed when killed, skipped when finished)
    DIR/summary.json              the numbers, the exact command, wall time and machine
    DIR/*.png                     the figures
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.io import atomic_write_text

SUMMARY = "summary.json"
PROBE_SEED_START = 700_000  # physics probes: far above the synthetic pre-training clips' seeds (0 .. clips-1)


# ------------------------------------------------------------------------------------------ options
def add_common_options(p: argparse.ArgumentParser, *, preset: str = "small") -> None:
    """--out, --preset, --batch-size, --seed, --device, --workers: the same meaning in every experiment."""
    p.add_argument("--out", required=True, help="experiment folder (rerunning the command resumes it)")
    p.add_argument("--preset", default=preset, help="model size for runs the experiment trains: tiny | small | base")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="training / sampling seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=2, help="processes for data collection")


def add_data_options(p: argparse.ArgumentParser, *, env: str, demos: int, synth: bool = False,
                     clips: int = 1000) -> None:
    """Where demonstrations (and synthetic clips) come from: an existing file, or collected into DIR/data."""
    p.add_argument("--env", default=env, help="Gymnasium env id: demos are collected and policies rolled out on it")
    p.add_argument("--demos", type=int, default=demos, help="training demonstrations (held-out ones come on top)")
    p.add_argument("--data", default=None, help="an existing demos HDF5 file to use instead of collecting")
    if synth:
        p.add_argument("--clips", type=int, default=clips, help="synthetic clips for phase 1 (video pre-training)")
        p.add_argument("--synth-data", default=None, help="an existing synthetic-video HDF5 file (gr2-sim synth)")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


# ------------------------------------------------------------------------------------------ data and runs
def ensure_file(path: Path, argv: list[str], what: str) -> Path:
    """Run ``gr2-sim ARGV --out PATH`` unless PATH.done says it finished (collect/synth resume a partial file)."""
    from gr2_sim.cli import main as gr2

    done = path.with_name(path.name + ".done")
    if not done.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        code = gr2([*argv, "--out", str(path)])
        if code != 0:
            raise UserError(f"making {what} failed (exit {code}); see the error above, then rerun the experiment")
        done.write_text("complete\n")
    return path


def existing_file(path: str, option: str) -> Path:
    if not Path(path).is_file():
        raise UserError(f"{option} {path}: no such file")
    return Path(path)


def demo_data(args: argparse.Namespace, out: Path) -> Path:
    """The demonstrations file: ``--data``, or ``--demos`` training episodes (plus ~10% held out) of ``--env``."""
    if args.data:
        return existing_file(args.data, "--data")
    from gr2_sim.sweep import demos_needed

    return ensure_file(out / "data" / "demos.hdf5",
                       ["collect", "--env", args.env, "--episodes", str(demos_needed(args.demos)), "--noise", "0.05",
                        "--workers", str(args.workers)], "demonstrations")


def synth_data(args: argparse.Namespace, out: Path) -> Path:
    """The synthetic physics video for phase 1: ``--synth-data``, or ``--clips`` clips of 16 frames."""
    if args.synth_data:
        return existing_file(args.synth_data, "--synth-data")
    return ensure_file(out / "data" / "synth.hdf5",
                       ["synth", "--clips", str(args.clips), "--frames", "16", "--workers", str(args.workers)],
                       "synthetic video")


def train_run(run: Path, **config: Any) -> Path:
    """Train (or resume, or skip when it reached ``steps``) one run; ``config``: TrainConfig fields."""
    from gr2_sim.sweep import train_if_needed

    return train_if_needed(run, progress=config.pop("progress", True), **config)


# ------------------------------------------------------------------------------------------ statistics
def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson's r, or None when it is undefined (fewer than 3 pairs or a constant series)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks_sorted = np.arange(1, len(values) + 1, dtype=float)
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or sorted_vals[i] != sorted_vals[start]:
            ranks_sorted[start:i] = (start + 1 + i) / 2
            start = i
    out = np.empty(len(values))
    out[order] = ranks_sorted
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks (ties averaged); None when undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3:
        return None
    return pearson(list(ranks(x)), list(ranks(y)))


def permutation_p(x: list[float], y: list[float], statistic, exact_up_to: int = 8, resamples: int = 20000,
                  seed: int = 0) -> float | None:
    """Two-sided permutation p-value of ``statistic(x, y)`` against shuffled pairings: exact (all n! orders)
    for n <= ``exact_up_to``, else ``resamples`` random orders (+1 smoothing). Assumes exchangeable pairs:
    points of one training curve are autocorrelated, so there it is optimistic. None when undefined."""
    observed = statistic(x, y)
    if observed is None:
        return None
    y = np.asarray(y, float)
    n = len(y)
    if n <= exact_up_to:
        orders = itertools.permutations(range(n))
        stats = [statistic(x, list(y[list(o)])) for o in orders]
        hits = sum(abs(v) >= abs(observed) - 1e-12 for v in stats if v is not None)
        return hits / len(stats)
    rng = np.random.default_rng(seed)
    hits = sum(abs(statistic(x, list(rng.permutation(y))) or 0.0) >= abs(observed) - 1e-12 for _ in range(resamples))
    return (hits + 1) / (resamples + 1)


def correlations(x: list[float], y: list[float], p_values: bool = False) -> dict[str, Any]:
    """{"pearson", "spearman", "n"}, and with ``p_values`` their two-sided permutation p-values
    ("pearson_p", "spearman_p"); values are None when undefined (e.g. every success rate was 0)."""
    out = {"pearson": pearson(x, y), "spearman": spearman(x, y), "n": len(x)}
    if p_values:
        out["pearson_p"] = permutation_p(x, y, pearson)
        out["spearman_p"] = permutation_p(x, y, spearman)
    return out


def bootstrap_mean_ci(values: list[float] | np.ndarray, resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict[str, Any]:
    """Mean of ``values`` and its percentile-bootstrap interval: {"mean", "ci95": [lo, hi], "n"}."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(v.mean()), "ci95": [float(lo), float(hi)], "n": int(len(v))}


# ------------------------------------------------------------------------------------------ the summary
def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


def command_line(args: argparse.Namespace) -> str:
    """The full command that reproduces this experiment, every option spelled out."""
    parser: argparse.ArgumentParser = args._parser
    words = ["gr2-sim", "experiment", args.experiment]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            words += [flag] if value else []
        elif value is not None:
            words += [flag, *(str(v) for v in value)] if isinstance(value, list) else [flag, str(value)]
    return " ".join(words)


def arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


def jsonable(obj: Any) -> Any:
    """NaN/inf become None (JSON has no NaN); numpy scalars and arrays become Python numbers and lists."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_summary(out: Path, args: argparse.Namespace, started: float, results: dict[str, Any]) -> Path:
    """DIR/summary.json: experiment, command, arguments, wall time (this invocation, and all invocations of this
    folder: a resumed experiment adds up), machine, then ``results``."""
    path = out / SUMMARY
    wall = time.perf_counter() - started
    previous = 0.0
    if path.exists():
        try:
            previous = float(json.loads(path.read_text()).get("wall_time_s_all_invocations") or 0.0)
        except (json.JSONDecodeError, ValueError):
            previous = 0.0
    summary = {"experiment": args.experiment, "command": command_line(args), "arguments": arguments(args),
               "wall_time_s": wall, "wall_time_s_all_invocations": previous + wall, "machine": machine(),
               **results}
    atomic_write_text(path, json.dumps(jsonable(summary), indent=2))
    print(f"experiment {args.experiment}: {path}")
    return path
