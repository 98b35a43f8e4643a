"""``gr2-sim bench``: measure speed on this machine (the numbers the README reports).

    gr2-sim bench env        rendered env steps per second per core, per task (physics + 64x64 frame)
    gr2-sim bench experts    scripted-expert success rate per task on seeds they were not tuned on
    gr2-sim bench train      model training throughput and FLOPs utilisation per preset (--device cuda: on a GPU)
    gr2-sim bench threads    training steps/s per thread count, alone and beside a one-thread busy loop
    gr2-sim bench latency    policy query latency (head and denoise readouts, batch 1) per preset, on 1 thread

Each prints a Markdown table and, with ``--json FILE``, writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

from gr2_sim.errors import UserError

TARGETS = ("env", "experts", "train", "threads", "latency")
DEFAULT_PRESETS = ["tiny", "small", "base"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", choices=TARGETS, help="what to measure")
    p.add_argument("--tasks", nargs="+", default=None, help="task names (default: all five)")
    p.add_argument("--steps", type=int, default=500, help="env steps per task (env) or train steps (train)")
    p.add_argument("--seeds", type=int, default=200, help="episodes per task (experts)")
    p.add_argument("--seed-start", type=int, default=1_000_000, help="first seed (experts)")
    p.add_argument("--noise", type=float, default=0.0, help="expert action noise (experts)")
    p.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS,
                   help="model presets (train, latency; threads: the first, default small)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (train)")
    p.add_argument("--compile", action="store_true", help="also time our model under torch.compile (train)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (train)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of training per cell (threads)")
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


DENOISE_STEPS = 10  # the denoise readout's DDIM steps in the latency bench (GR2Policy's default)


def bench_latency(presets: list[str], queries: int) -> list[dict]:
    """Per preset: a batch-1 policy query, eager under inference_mode as ``GR2Policy`` runs it, on 1 thread, with
    the ``head`` readout (one forward pass) and the ``denoise`` readout (``DENOISE_STEPS`` DDIM steps, actions
    read at the last); median and p95 ms of ``queries`` queries after 5 warm-up queries (denoise: a fifth as
    many, at least 5)."""
    import numpy as np
    import torch

    from gr2_sim.config import make_config
    from gr2_sim.diffusion import Diffusion
    from gr2_sim.model import VideoActionDiT

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for preset in presets:
            torch.manual_seed(0)
            model = VideoActionDiT(make_config(preset, state_dim=8)).eval().requires_grad_(False)
            cfg, diffusion = model.config, Diffusion(model.config)
            cond = torch.rand(1, 3, cfg.img_size, cfg.img_size) * 2 - 1
            tokens, state = model.text_encoder.tokenize(["push the red cube"]), torch.randn(1, cfg.state_dim)
            generator = torch.Generator().manual_seed(0)
            args = (model, cond, tokens, state)
            readouts = {"head": (functools.partial(diffusion.head_actions, *args, generator), queries),
                        "denoise": (functools.partial(diffusion.ddim_sample, *args, DENOISE_STEPS, generator=generator),
                                    queries // 5)}
            for readout, (query, n) in readouts.items():
                times = []
                with torch.inference_mode():
                    for i in range(5 + max(n, 5)):
                        start = time.perf_counter()
                        query()
                        if i >= 5:
                            times.append(1000 * (time.perf_counter() - start))
                rows.append({"preset": preset, "readout": readout, "threads": 1, "queries": len(times),
                             "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95))})
    finally:
        torch.set_num_threads(threads)
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def task_names(names: list[str] | None) -> list[str]:
    import envs

    tasks = names or [t for t in envs.TASKS if t != "MultiTask"]
    unknown = [t for t in tasks if t not in envs.TASKS]
    if unknown:
        raise UserError(f"unknown task(s) {unknown}; choose from {', '.join(envs.TASKS)}")
    return tasks


def run(args: argparse.Namespace) -> int:
    header = f"gr2-sim bench {args.target} on {machine()}"
    if args.target == "env":
        rows = bench_env(task_names(args.tasks), args.steps)
    elif args.target == "experts":
        rows = bench_experts(task_names(args.tasks), args.seeds, args.seed_start, args.noise)
    elif args.target == "threads":
        from gr2_sim.bench_train import bench_threads

        if args.seconds <= 0:
            raise UserError(f"--seconds must be > 0, got {args.seconds}")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        preset = args.presets[0] if args.presets != DEFAULT_PRESETS else "small"
        rows = bench_threads(preset, args.batch_size, args.seconds)
        header += f"; load average (1, 5, 15 min) at the start: {load}"
    elif args.target == "latency":
        rows = bench_latency(args.presets, min(args.steps, 200))
    else:
        from gr2_sim.bench_train import bench_train
        from gr2_sim.device import resolve_device

        device = resolve_device(args.device)
        rows = bench_train(args.presets, args.batch_size, args.steps, compile=args.compile, device=device)
        header += f", device {device_name(device)}"
    print(header)
    print(table(rows))
    if args.json:
        from gr2_sim.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"machine": machine(), "header": header, "rows": rows}, indent=2))
    return 0


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu (torch {torch.__version__}, {torch.get_num_threads()} threads)"
