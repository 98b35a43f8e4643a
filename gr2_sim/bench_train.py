"""Training throughput and model FLOPs utilisation, ours vs the lesson's straightforward model and the image BC.

The peak is measured here, not assumed: the best of a few large fp32 matrix multiplies with all threads.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from gr2_sim.config import make_config
from gr2_sim.device import autocast, enable_tf32, synchronize
from gr2_sim.model import VideoActionDiT
from gr2_sim.reference_model import ReferenceDiT
from gr2_sim.train import make_optimizer


def reference_flop_config(cfg):
    """The config whose ``estimate_flops`` counts the lesson reference built from ``cfg``'s sizes: the lesson's
    linear patch embedding, mean pooling, no keypoints (and so no keypoint readout or conv video head), its
    one-hidden-layer action MLP on the DiT's states."""
    return dataclasses.replace(cfg, cond_stem="linear", action_pool="mean", keypoints=0, future_input="noisy",
                               residual=False, action_from_dit=True, video_head="linear", video_head_detach=True,
                               keypoint_layout="dit", action_layers=1, keypoint_decoder=0, aux_dim=0)


def measured_matmul_flops(n: int = 1024, repeats: int = 10, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32) -> float:
    """Matmul rate of this machine (FLOP/s), best of ``repeats``: float32 (TF32 on CUDA, as training runs it)
    or ``dtype``; on CUDA a bigger matrix so the GPU is saturated."""
    device = torch.device(device)
    n = 4096 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_throughput(model: torch.nn.Module, batch_size: int, steps: int, warmup: int = 2,
                     device: torch.device | str = "cpu", bf16: bool = False) -> float:
    """Samples per second of forward + backward + AdamW on random data of the model's sizes (on ``device``; with
    ``bf16``, under bf16 autocast on CUDA, as ``gr2-sim train`` runs there)."""
    device = torch.device(device)
    cfg = model.config
    T, S = cfg.n_future, cfg.img_size
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.01)  # the trainer's optimizer
    cond, future = torch.randn(batch_size, 3, S, S, device=device), torch.randn(batch_size, T, 3, S, S, device=device)
    t = torch.randint(cfg.diffusion_steps, (batch_size,), device=device)
    text = torch.randint(1, cfg.vocab_size, (batch_size, cfg.max_text_len), device=device)
    actions = torch.randn(batch_size, T, cfg.action_dim, device=device)
    state = torch.randn(batch_size, cfg.state_dim, device=device) if cfg.state_dim else None
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast(device, bf16):
            out = model(cond, future, t, text, state, target_noise=future, target_actions=actions)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def bc_throughput(model: torch.nn.Module, batch_size: int, steps: int, warmup: int = 2,
                  device: torch.device | str = "cpu") -> float:
    """Samples per second of the image-BC policy's training step (forward, MSE, backward, AdamW)."""
    device = torch.device(device)
    cfg = model.config
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.01)
    batch = {"cond": torch.randn(batch_size, 3, cfg.img_size, cfg.img_size, device=device),
             "text": torch.randint(1, cfg.vocab_size, (batch_size, cfg.max_text_len), device=device),
             "actions": torch.randn(batch_size, cfg.horizon, cfg.action_dim, device=device)}
    if cfg.state_dim:
        batch["state"] = torch.randn(batch_size, cfg.state_dim, device=device)
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        loss = model.compute_loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def bench_train(presets: list[str], batch_size: int, steps: int, compile: bool = False,
                baselines: bool = True, device: torch.device | str = "cpu") -> list[dict]:
    """Per preset: ours and the lesson's reference model (and, with ``compile``, ours under torch.compile);
    then, with ``baselines``, one row for the plain image-BC policy (``--stage bc``, policies/bc.py).

    On CUDA (TF32 matmuls on) ours runs in float32 and under bf16 autocast, and each row's MFU is against the
    matmul peak measured in its own precision."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        enable_tf32()
    steps = max(3, min(steps, 20 if not cuda else 50))
    peaks = {False: measured_matmul_flops(device=device)}
    if cuda:
        peaks[True] = measured_matmul_flops(device=device, dtype=torch.bfloat16)
    rows = []
    for preset in presets:
        cfg = make_config(preset, state_dim=8)
        lesson_cfg = reference_flop_config(cfg)  # each model's own FLOPs
        ours = "gr2-sim, TF32" if cuda else "gr2-sim"
        variants = [(ours, VideoActionDiT, cfg, False, False), ("lesson reference", ReferenceDiT, lesson_cfg, False, False)]
        if cuda:
            variants.insert(1, ("gr2-sim, bf16 autocast", VideoActionDiT, cfg, False, True))
        if compile:
            variants.insert(1, ("gr2-sim, torch.compile", VideoActionDiT, cfg, True, cuda))
        for name, cls, flop_cfg, compiled, bf16 in variants:
            flops = VideoActionDiT(flop_cfg).estimate_flops()["train_step"]
            torch.manual_seed(0)
            model = cls(cfg).to(device)
            n_steps = steps if preset != "base" or cuda else 3
            sps = train_throughput(torch.compile(model) if compiled else model, batch_size, n_steps,
                                   warmup=3 if compiled else 2, device=device, bf16=bf16)
            peak = peaks[bf16]
            rows.append({"preset": preset, "model": name, "device": str(device), "tokens": cfg.n_tokens,
                         "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                         "samples_per_s": sps, "GFLOP_per_sample": flops / 1e9,
                         "achieved_GFLOP_s": flops * sps / 1e9, "matmul_peak_GFLOP_s": peak / 1e9,
                         "MFU": flops * sps / peak})
    if baselines:
        from policies.bc import BCConfig, BCModel

        torch.manual_seed(0)
        model = BCModel(BCConfig(state_dim=8)).to(device)
        flops = model.estimate_flops()["train_step"]
        sps = bc_throughput(model, batch_size, steps, device=device)
        peak = peaks[False]
        rows.append({"preset": "-", "model": "image BC (--stage bc)", "device": str(device), "tokens": "-",
                     "params_M": model.num_params() / 1e6, "samples_per_s": sps,
                     "GFLOP_per_sample": flops / 1e9, "achieved_GFLOP_s": flops * sps / 1e9,
                     "matmul_peak_GFLOP_s": peak / 1e9, "MFU": flops * sps / peak})
    return rows


# ------------------------------------------------------------------------------------------ threads
_CHILD = """
import json, sys, time, torch
from gr2_sim.bench_train import timed_train_rate
from gr2_sim.device import set_threads
threads = set_threads(int(sys.argv[1]), say=False)
print(json.dumps({"threads_used": threads, **timed_train_rate(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))}))
"""


BUSY_LOOP = """
import os
parent = os.getppid()
while os.getppid() == parent:  # spin on one core until the bench (its parent) ends
    for _ in range(1_000_000):
        pass
"""


def timed_train_rate(preset: str, batch_size: int, seconds: float) -> dict:
    """Training steps per second of ``preset`` (random data, the trainer's AdamW) over about ``seconds``."""
    cfg = make_config(preset, state_dim=8)
    torch.manual_seed(0)
    model = VideoActionDiT(cfg)
    T, S = cfg.n_future, cfg.img_size
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.01)
    batch = dict(cond=torch.randn(batch_size, 3, S, S), future=torch.randn(batch_size, T, 3, S, S),
                 t=torch.randint(cfg.diffusion_steps, (batch_size,)),
                 text=torch.randint(1, cfg.vocab_size, (batch_size, cfg.max_text_len)),
                 state=torch.randn(batch_size, cfg.state_dim))
    actions = torch.randn(batch_size, T, cfg.action_dim)

    def step() -> None:
        out = model(batch["cond"], batch["future"], batch["t"], batch["text"], batch["state"],
                    target_noise=batch["future"], target_actions=actions)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    step()  # warm-up
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "steps_per_s": steps / elapsed, "samples_per_s": steps * batch_size / elapsed}


def bench_threads(preset: str = "small", batch_size: int = 16, seconds: float = 8.0,
                  threads: tuple[int, ...] = (1, 2, 0), policies: tuple[str, ...] = ("unset", "PASSIVE")) -> list[dict]:
    """Training steps/s with and without a one-thread busy loop beside it, per thread count (0: the automatic
    rule of :func:`gr2_sim.device.auto_threads`) and OpenMP wait policy ("unset": OpenMP's default, threads spin
    a while before they sleep; "PASSIVE": the ``gr2-sim`` command's default); each cell in a fresh process (the
    wait policy is read when torch starts OpenMP)."""
    import json
    import os
    import subprocess
    import sys

    rows = []
    for neighbor in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if neighbor else None
        try:
            if busy is not None:
                time.sleep(1.0)  # let it take its core (and the auto rule see it)
            for policy in policies:
                for n in threads:
                    if n == 1 and policy != policies[0]:
                        continue  # one thread never waits for another: the policy cannot matter
                    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
                    env.update({"OMP_NUM_THREADS": str(n)} if n else {})  # auto: no override
                    env.update({"OMP_WAIT_POLICY": policy} if policy != "unset" else {})
                    load = os.getloadavg()[0]
                    result = subprocess.run([sys.executable, "-c", _CHILD, str(n), preset, str(batch_size),
                                             str(seconds)], env=env, capture_output=True, text=True, check=True)
                    rate = json.loads(result.stdout.strip().splitlines()[-1])
                    rows.append({"neighbor": "1-thread busy loop" if neighbor else "none",
                                 "threads": f"auto ({rate['threads_used']})" if n == 0 else str(n),
                                 "OMP_WAIT_POLICY": policy if n != 1 else "-", "preset": preset,
                                 "batch": batch_size, "steps_per_s": rate["steps_per_s"],
                                 "samples_per_s": rate["samples_per_s"], "load_1min": load})
        finally:
            if busy is not None:
                busy.terminate()
                busy.wait()
    return rows
