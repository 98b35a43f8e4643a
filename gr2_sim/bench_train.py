"""Training throughput and model FLOPs utilisation, ours vs the lesson's straightforward model and the image BC.

The peak is measured here, not assumed: the best of a few large fp32 matrix multiplies with all threads.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from gr2_sim.config import make_config
from gr2_sim.model import VideoActionDiT
from gr2_sim.reference_model import ReferenceDiT
from gr2_sim.train import make_optimizer


def measured_matmul_flops(n: int = 1024, repeats: int = 10) -> float:
    """fp32 matmul rate of this machine (FLOP/s), best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_throughput(model: torch.nn.Module, batch_size: int, steps: int, warmup: int = 2) -> float:
    """Samples per second of forward + backward + AdamW on random data of the model's sizes."""
    cfg = model.config
    T, S = cfg.n_future, cfg.img_size
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.01)  # the trainer's optimizer
    cond, future = torch.randn(batch_size, 3, S, S), torch.randn(batch_size, T, 3, S, S)
    t = torch.randint(cfg.diffusion_steps, (batch_size,))
    text = torch.randint(1, cfg.vocab_size, (batch_size, cfg.max_text_len))
    actions = torch.randn(batch_size, T, cfg.action_dim)
    state = torch.randn(batch_size, cfg.state_dim) if cfg.state_dim else None
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        out = model(cond, future, t, text, state, target_noise=future, target_actions=actions)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return batch_size * steps / (time.perf_counter() - start)


def bc_throughput(model: torch.nn.Module, batch_size: int, steps: int, warmup: int = 2) -> float:
    """Samples per second of the image-BC policy's training step (forward, MSE, backward, AdamW)."""
    cfg = model.config
    opt = make_optimizer(model, lr=1e-4, weight_decay=0.01)
    batch = {"cond": torch.randn(batch_size, 3, cfg.img_size, cfg.img_size),
             "text": torch.randint(1, cfg.vocab_size, (batch_size, cfg.max_text_len)),
             "actions": torch.randn(batch_size, cfg.horizon, cfg.action_dim)}
    if cfg.state_dim:
        batch["state"] = torch.randn(batch_size, cfg.state_dim)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = model.compute_loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch_size * steps / (time.perf_counter() - start)


def bench_train(presets: list[str], batch_size: int, steps: int, compile: bool = False,
                baselines: bool = True) -> list[dict]:
    """Per preset: ours and the lesson's reference model (and, with ``compile``, ours under torch.compile);
    then, with ``baselines``, one row for the plain image-BC policy (``--stage bc``, policies/bc.py)."""
    steps = max(3, min(steps, 20))
    peak = measured_matmul_flops()
    rows = []
    for preset in presets:
        cfg = make_config(preset, state_dim=8)
        # each model's own FLOPs: the reference has the lesson's linear patch embedding and mean pooling
        lesson_cfg = dataclasses.replace(cfg, cond_stem="linear", action_pool="mean", keypoints=0, future_input="noisy",
                                         residual=False)
        variants = [("gr2-sim", VideoActionDiT, cfg, False), ("lesson reference", ReferenceDiT, lesson_cfg, False)]
        if compile:
            variants.insert(1, ("gr2-sim, torch.compile", VideoActionDiT, cfg, True))
        for name, cls, flop_cfg, compiled in variants:
            flops = VideoActionDiT(flop_cfg).estimate_flops()["train_step"]
            torch.manual_seed(0)
            model = cls(cfg)
            sps = train_throughput(torch.compile(model) if compiled else model, batch_size,
                                   steps if preset != "base" else 3, warmup=3 if compiled else 2)
            rows.append({"preset": preset, "model": name, "tokens": cfg.n_tokens,
                         "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                         "samples_per_s": sps, "GFLOP_per_sample": flops / 1e9,
                         "achieved_GFLOP_s": flops * sps / 1e9, "matmul_peak_GFLOP_s": peak / 1e9,
                         "MFU": flops * sps / peak})
    if baselines:
        from policies.bc import BCConfig, BCModel

        torch.manual_seed(0)
        model = BCModel(BCConfig(state_dim=8))
        flops = model.estimate_flops()["train_step"]
        sps = bc_throughput(model, batch_size, steps)
        rows.append({"preset": "-", "model": "image BC (--stage bc)", "tokens": "-",
                     "params_M": model.num_params() / 1e6, "samples_per_s": sps,
                     "GFLOP_per_sample": flops / 1e9, "achieved_GFLOP_s": flops * sps / 1e9,
                     "matmul_peak_GFLOP_s": peak / 1e9, "MFU": flops * sps / peak})
    return rows
