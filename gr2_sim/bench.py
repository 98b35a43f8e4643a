"""``gr2-sim bench``: measure speed on this machine (the numbers the README reports).

    gr2-sim bench env        rendered env steps per second per core, per task (physics + 64x64 frame)
    gr2-sim bench experts    scripted-expert success rate per task on seeds they were not tuned on
    gr2-sim bench train      model training throughput and FLOPs utilisation per preset

Each prints a Markdown table and, with ``--json FILE``, writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from gr2_sim.errors import UserError

TARGETS = ("env", "experts", "train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=TARGETS, help="what to measure")
    p.add_argument("--tasks", nargs="+", default=None, help="task names (default: all five)")
    p.add_argument("--steps", type=int, default=500, help="env steps per task (env) or train steps (train)")
    p.add_argument("--seeds", type=int, default=200, help="episodes per task (experts)")
    p.add_argument("--seed-start", type=int, default=1_000_000, help="first seed (experts)")
    p.add_argument("--noise", type=float, default=0.0, help="expert action noise (experts)")
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "base"], help="model presets (train)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (train)")
    p.add_argument("--compile", action="store_true", help="also time our model under torch.compile (train)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def bench_env(tasks: list[str], steps: int) -> list[dict]:
    """Per task: env steps per second of wall time (``steps_per_s``) and of this process's CPU time
    (``cpu_steps_per_s``; llvmpipe renders in this thread, see ``envs.scene``). On a machine busy with other
    work the wall-clock rate drops with the share of a core we get; the CPU-time rate much less so."""
    import gymnasium as gym
    import mujoco
    import numpy as np

    import envs  # noqa: F401  (registers the ids; run() imported it before mujoco, which sets MUJOCO_GL)
    from envs.base import SUBSTEPS

    rows = []
    for task in tasks:
        env = gym.make(f"GR2Sim/{task}-v0").unwrapped
        rng = np.random.default_rng(0)
        env.reset(seed=0)
        for _ in range(10):  # warm up (creates the GL context)
            env.step(rng.uniform(-1, 1, 7))
        n, t_step, t_cpu = 0, 0.0, 0.0
        start = time.perf_counter()
        while n < steps:
            action = rng.uniform(-1, 1, 7)
            t0, c0 = time.perf_counter(), time.process_time()
            _, _, terminated, truncated, _ = env.step(action)
            t_step += time.perf_counter() - t0
            t_cpu += time.process_time() - c0
            n += 1
            if terminated or truncated or n % 100 == 0:
                env.reset(seed=n)
        wall = time.perf_counter() - start
        t0 = time.perf_counter()
        for _ in range(steps):
            env._obs_camera.render(env.data)
        t_render = (time.perf_counter() - t0) / steps
        t0 = time.perf_counter()
        for _ in range(max(steps // 5, 20)):
            mujoco.mj_step(env.model, env.data, nstep=SUBSTEPS)
        t_physics = (time.perf_counter() - t0) / max(steps // 5, 20)
        rows.append({"task": task, "steps_per_s": steps / t_step, "ms_per_step": 1e3 * t_step / steps,
                     "render_ms": 1e3 * t_render, "physics_ms": 1e3 * t_physics,
                     "steps_per_s_with_resets": steps / wall, "cpu_steps_per_s": steps / t_cpu})
        env.close()
    return rows


def bench_experts(tasks: list[str], seeds: int, seed_start: int, noise: float) -> list[dict]:
    import gymnasium as gym
    from tqdm import tqdm

    import envs

    rows = []
    for task in tasks:
        env = gym.make(f"GR2Sim/{task}-v0")
        expert = envs.make_expert(env, noise=noise, seed=0)
        successes, lengths = 0, []
        for seed in tqdm(range(seed_start, seed_start + seeds), desc=f"expert {task}", leave=False):
            obs, info = env.reset(seed=seed)
            expert.reset()
            done, n = False, 0
            while not done:
                obs, _, terminated, truncated, info = env.step(expert.select_action(obs))
                done, n = terminated or truncated, n + 1
            successes += bool(info["is_success"])
            lengths.append(n)
        rows.append({"task": task, "episodes": seeds, "success_rate": successes / seeds,
                     "mean_length": sum(lengths) / len(lengths), "seeds": f"{seed_start}..{seed_start + seeds - 1}",
                     "noise": noise})
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import envs

    tasks = args.tasks or [t for t in envs.TASKS if t != "MultiTask"]
    unknown = [t for t in tasks if t not in envs.TASKS]
    if unknown:
        raise UserError(f"unknown task(s) {unknown}; choose from {', '.join(envs.TASKS)}")
    if args.target == "env":
        rows = bench_env(tasks, args.steps)
    elif args.target == "experts":
        rows = bench_experts(tasks, args.seeds, args.seed_start, args.noise)
    else:
        from gr2_sim.bench_train import bench_train

        rows = bench_train(args.presets, args.batch_size, args.steps, compile=args.compile)
    print(f"gr2-sim bench {args.target} on {machine()}")
    print(table(rows))
    if args.json:
        from gr2_sim.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0
