"""The CUDA path: training (TF32, bf16 autocast, pinned batches, no per-step host sync), evaluation and the bench.

Skipped without a CUDA GPU; ``scripts/gpu_check.sh`` runs them (``pytest -m cuda``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from gr2_sim.cli import main

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_pinned_non_blocking_copies_arrive_intact():
    from gr2_sim.device import to_device

    x = torch.randn(4, 3, 8, 8)
    y = to_device(x, "cuda")
    assert y.is_cuda and torch.equal(y.cpu(), x)


@pytest.mark.parametrize("bf16", [True, False])
def test_training_on_cuda_learns_and_saves_a_loadable_run(demo_file, tmp_path, bf16, capsys):
    run = tmp_path / "run"
    argv = ["train", "--stage", "action", "--data", str(demo_file), "--out", str(run), "--preset", "tiny",
            "--steps", "30", "--batch-size", "8", "--device", "cuda", "--eval-every", "15", "--ckpt-every", "15",
            "--no-progress", *([] if bf16 else ["--no-bf16"])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "TF32 matmuls" in out and ("bf16 autocast" in out) == bf16
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert any("val_action_mse" in r for r in rows)


def test_a_training_step_makes_no_host_sync(demo_file, tmp_path):
    """The body of the training loop, between log steps, under CUDA's sync debug mode set to raise."""
    from gr2_sim.dataset import Normalizer, WindowSampler
    from gr2_sim.device import autocast, enable_tf32
    from gr2_sim.objectives import make_objective
    from gr2_sim.train import TrainConfig, ema_update, load_data, make_optimizer

    cfg = TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "r"), preset="tiny", batch_size=8)
    train_eps, _ = load_data(cfg)
    objective = make_objective(cfg, train_eps, tmp_path / "r", False)
    sampler = WindowSampler(train_eps, **objective.sampler_args(), normalizer=Normalizer.fit(train_eps))
    enable_tf32()
    model = objective.build_model(None).cuda()
    ema = objective.build_model(None).cuda().requires_grad_(False)
    optimizer = make_optimizer(model, 1e-3, 0.01)
    gen, noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    device = torch.device("cuda")

    def step() -> None:
        batch = sampler.sample(cfg.batch_size, gen, device)
        with autocast(device, True):
            out = objective.loss(model, batch, noise)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema_update(ema, model, 0.99)

    step()  # first-call set-up (allocations, cuBLAS handles) may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_cuda_trained_model_gives_the_same_actions_on_cpu_and_cuda(demo_file, tmp_path):
    from gr2_sim.checkpoint import load_dit

    run = tmp_path / "run"
    assert main(["train", "--stage", "action", "--data", str(demo_file), "--out", str(run), "--preset", "tiny",
                 "--steps", "5", "--batch-size", "4", "--device", "cuda", "--no-progress"]) == 0
    model = load_dit(run).eval()
    cfg = model.config
    torch.manual_seed(0)
    inputs = (torch.rand(1, 3, cfg.img_size, cfg.img_size) * 2 - 1, torch.randn(1, cfg.n_future, 3, cfg.img_size,
              cfg.img_size), torch.tensor([cfg.diffusion_steps - 1]), model.text_encoder.tokenize(["reach"]),
              torch.randn(1, cfg.state_dim))
    with torch.inference_mode():
        cpu = model(*inputs, need_video=False)["actions"]
        gpu = model.cuda()(*[x.cuda() for x in inputs], need_video=False)["actions"].cpu()
    torch.testing.assert_close(gpu, cpu, atol=2e-2, rtol=0)  # TF32 matmuls on the GPU


def test_eval_command_on_cuda(demo_file, tmp_path):
    run, ev = tmp_path / "run", tmp_path / "eval"
    assert main(["train", "--stage", "action", "--data", str(demo_file), "--out", str(run), "--preset", "tiny",
                 "--steps", "3", "--batch-size", "4", "--device", "cuda", "--no-progress"]) == 0
    assert main(["eval", "--ckpt", str(run), "--env", "GR2Sim/Reach-v0", "--episodes", "2", "--device", "cuda",
                 "--env-kwargs", '{"max_episode_steps": 6}', "--out", str(ev), "--no-progress"]) == 0
    report = json.loads((ev / "eval.json").read_text())
    assert report["config"]["policy"]["device"].startswith("cuda") and report["aggregated"]["episodes"] == 2


def test_bench_train_on_cuda_has_tf32_and_bf16_rows():
    from gr2_sim.bench_train import bench_train

    rows = bench_train(["tiny"], batch_size=8, steps=3, device="cuda")
    assert [r["model"] for r in rows] == ["gr2-sim, TF32", "gr2-sim, bf16 autocast", "lesson reference"]
    assert all(r["samples_per_s"] > 0 and r["device"].startswith("cuda") for r in rows)
