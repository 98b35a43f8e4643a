"""The training loop: the three phases, checkpoints, resume equivalence, DDP, and every bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import gr2_sim.train as train_mod
from gr2_sim.checkpoint import load_trainer_state
from gr2_sim.cli import main
from gr2_sim.config import make_config
from gr2_sim.errors import UserError
from gr2_sim.train import TrainConfig, TrainingDiverged, train

TINY = dict(preset="tiny", batch_size=4, eval_every=3, ckpt_every=3, progress=False, val_windows=8)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_action_stage_writes_a_complete_run(demo_file, tmp_path):
    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "run"), steps=6, **TINY))
    for name in ("config.json", "model.safetensors", "normalizer.json", "trainer_state.pt", "metrics.jsonl"):
        assert (run / name).exists(), name
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert state["step"] == 6
    weights = load_file(str(run / "model.safetensors"))
    assert any(k.startswith("ema.") for k in weights) and any(k.startswith("model.") for k in weights)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["action_dim"] == 7 and config["model"]["state_dim"] == 8
    logs = metrics(run)
    assert any("action_loss" in r and "samples_per_s" in r and "lr" in r for r in logs)
    assert any("val_action_mse" in r and "val_video_mse" in r for r in logs)


def test_keep_every_keeps_loadable_weights_of_one_run(demo_file, tmp_path):
    from gr2_sim.checkpoint import kept_checkpoints, load_weights
    from policies.gr2 import GR2Policy

    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "run"), steps=5,
                            keep_every=2, **TINY))
    kept = kept_checkpoints(run)
    assert [step for step, _ in kept] == [2, 4, 5]
    torch.testing.assert_close(load_weights(kept[-1][1]), load_weights(run))
    assert not torch.equal(load_weights(kept[0][1])["action_head.0.weight"], load_weights(run)["action_head.0.weight"])
    GR2Policy.from_checkpoint(kept[0][1])  # each kept folder is a run a policy loads
    # step_2 names the zero-padded folder step_000002; a step that was not kept lists the kept ones
    assert GR2Policy.from_checkpoint(run / "checkpoints" / "step_2").action_normalizer is not None
    with pytest.raises(UserError, match="kept checkpoints .* are at steps 2, 4, 5"):
        GR2Policy.from_checkpoint(run / "checkpoints" / "step_3")
    with pytest.raises(UserError, match="--keep-every must be >= 0"):
        TrainConfig(stage="action", data="x", out="y", keep_every=-1)


def test_best_holds_the_weights_of_the_lowest_held_out_error(demo_file, tmp_path):
    from gr2_sim.checkpoint import load_weights
    from policies.gr2 import GR2Policy

    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "run"), steps=9, keep_every=1,
                            **{**TINY, "eval_every": 1, "lr": 3e-3}))
    vals = [(r["val_action_mse"], r["step"]) for r in metrics(run) if "val_action_mse" in r]
    best = json.loads((run / "best" / "best.json").read_text())
    assert (best["value"], best["step"]) == min(vals) and best["metric"] == "val_action_mse"
    # the same weights as the copy kept at that step (--keep-every 1 keeps them all)
    torch.testing.assert_close(load_weights(run / "best"), load_weights(run / "checkpoints" / f"step_{best['step']:06d}"))
    GR2Policy.from_checkpoint(run / "best")  # a loadable run folder
    assert load_trainer_state(run)["best_val"] == pytest.approx(best["value"])
    off = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "off"), steps=3, keep_best=False,
                            **TINY))
    assert not (off / "best").exists()


def test_three_phases_chain(video_file, demo_file, tmp_path):
    p1 = train(TrainConfig(stage="video", data=str(video_file), out=str(tmp_path / "p1"), steps=3, **TINY))
    p2 = train(TrainConfig(stage="robot-video", data=str(demo_file), out=str(tmp_path / "p2"), init=str(p1),
                           steps=3, **{**TINY, "preset": None}))
    p3 = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "p3"), init=str(p2), steps=3,
                           **{**TINY, "preset": None}))
    config = json.loads((p3 / "config.json").read_text())
    assert config["model"]["d_model"] == json.loads((p1 / "config.json").read_text())["model"]["d_model"]
    assert all("action_loss" not in r for r in metrics(p2))
    assert any("action_loss" in r for r in metrics(p3))


def test_resume_after_kill_matches_uninterrupted_run(demo_file, tmp_path, monkeypatch):
    common = dict(stage="action", data=str(demo_file), steps=8, seed=3, **{**TINY, "ckpt_every": 4})
    full = train(TrainConfig(out=str(tmp_path / "full"), **common))

    calls = {"n": 0}
    real = train_mod.ema_update

    def killed_at_step_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "ema_update", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(out=str(tmp_path / "killed"), **common))
    monkeypatch.setattr(train_mod, "ema_update", real)
    assert load_trainer_state(tmp_path / "killed")["step"] == 4  # at most one interval lost
    resumed = train(TrainConfig(out=str(tmp_path / "killed"), resume=True, **common))

    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    steps = [r["step"] for r in metrics(resumed) if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    # wall_s counts the training time of every session of the run: it never goes back after the resume
    walls = [r["wall_s"] for r in metrics(resumed)]
    assert walls == sorted(walls) and walls[0] >= 0
    assert load_trainer_state(resumed)["wall_s"] >= walls[-1] - 0.01


def test_action_stage_on_video_only_data_is_refused(video_file, tmp_path):
    with pytest.raises(UserError, match="without actions"):
        train(TrainConfig(stage="action", data=str(video_file), out=str(tmp_path / "r"), steps=2, **TINY))


def test_too_many_demos_is_refused(demo_file, tmp_path):
    with pytest.raises(UserError, match="only"):
        train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "r"), demos=500, steps=2, **TINY))


def test_init_with_other_sizes_is_refused(demo_file, tmp_path):
    p1 = train(TrainConfig(stage="robot-video", data=str(demo_file), out=str(tmp_path / "p1"), steps=2, **TINY))
    with pytest.raises(UserError, match="do not match"):
        train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "p2"), init=str(p1),
                          steps=2, **{**TINY, "preset": "small"}))


def test_init_names_where_its_action_head_differs_from_the_small_preset(demo_file, tmp_path, capsys):
    """An init run of another head design (here tiny's) is kept as it is, and phase 3 says so; --set changes it."""
    from gr2_sim.objectives import note_init_head

    p2 = train(TrainConfig(stage="robot-video", data=str(demo_file), out=str(tmp_path / "p2"), steps=1, **TINY))
    capsys.readouterr()
    train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "p3"), init=str(p2), steps=1,
                      **{**TINY, "preset": None}))
    out = capsys.readouterr().out
    assert "action_hidden=64 (small: 512)" in out and "--set FIELD=VALUE" in out
    small = make_config("small").to_dict()
    assert note_init_head("RUN", small) == {}  # the default head: nothing to say
    assert note_init_head("RUN", {**small, "action_layers": 1}) == {"action_layers": (1, 3)}


def test_corrupt_checkpoint_gives_clear_error(demo_file, tmp_path):
    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "r"), steps=3, **TINY))
    data = (run / "trainer_state.pt").read_bytes()
    (run / "trainer_state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        train(TrainConfig(stage="action", data=str(demo_file), out=str(run), steps=6, resume=True, **TINY))
    (run / "model.safetensors").write_bytes(b"not a safetensors file")
    from gr2_sim.checkpoint import load_weights

    with pytest.raises(UserError, match="corrupt"):
        load_weights(run)


def test_existing_run_is_not_overwritten_without_resume(demo_file, tmp_path):
    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "r"), steps=2, **TINY))
    with pytest.raises(UserError, match="--resume"):
        train(TrainConfig(stage="action", data=str(demo_file), out=str(run), steps=2, **TINY))


def test_nan_loss_stops_and_keeps_last_checkpoint(demo_file, tmp_path, monkeypatch):
    import gr2_sim.objectives as objectives

    real = objectives.diffusion_loss
    calls = {"n": 0}

    def nan_at_step_5(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            out["loss"] = out.loss * float("nan")
        return out

    monkeypatch.setattr(objectives, "diffusion_loss", nan_at_step_5)
    with pytest.raises(TrainingDiverged, match="step 5"):
        train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "r"), steps=8, **TINY))
    assert load_trainer_state(tmp_path / "r")["step"] == 3


def test_cli_bad_input_exit_code(tmp_path, capsys):
    assert main(["train", "--stage", "action", "--data", str(tmp_path / "missing.hdf5"), "--out",
                 str(tmp_path / "r")]) == 2
    assert "missing.hdf5" in capsys.readouterr().err


def test_set_overrides_model_fields_and_rejects_unknown_ones(demo_file, tmp_path, capsys):
    from gr2_sim.train import parse_overrides

    assert parse_overrides(["n_layers=1", "cond_stem=conv", "mlp_ratio=1.5"]) == \
        {"n_layers": 1, "cond_stem": "conv", "mlp_ratio": 1.5}
    base = ["train", "--stage", "action", "--data", str(demo_file), "--preset", "tiny", "--steps", "2",
            "--no-progress", "--eval-every", "2", "--ckpt-every", "2"]
    assert main([*base, "--out", str(tmp_path / "r"), "--set", "cond_stem=conv", "--set", "action_pool=mean"]) == 0
    model = json.loads((tmp_path / "r" / "config.json").read_text())["model"]
    assert (model["cond_stem"], model["action_pool"]) == ("conv", "mean")
    for bad, message in (("n_layer=2", "unknown ModelConfig field"), ("n_layers", "FIELD=VALUE"),
                         ("cond_stem=cnn", "cond_stem='cnn' is not one of")):
        assert main([*base, "--out", str(tmp_path / "bad"), "--set", bad]) == 2
        assert message in capsys.readouterr().err


def test_torchrun_two_processes_stay_in_sync(demo_file, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "gr2_sim.cli", "train", "--stage", "action", "--data", str(demo_file), "--out", str(run),
           "--preset", "tiny", "--steps", "4", "--batch-size", "2", "--ckpt-every", "2", "--eval-every", "2",
           "--device", "cpu", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = [r["rank_param_checksums"] for r in metrics(run) if "rank_param_checksums" in r]
    assert len(checks) == 2 and all(len(c) == 2 and c[0] == c[1] for c in checks)
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


def test_idm_stage_trains_the_inverse_dynamics_model(demo_file, tmp_path):
    from policies.inverse_dynamics import load_idm

    run = train(TrainConfig(stage="idm", data=str(demo_file), out=str(tmp_path / "idm"), steps=4, **TINY))
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "idm" and config["model"]["action_dim"] == 7
    assert any("val_action_mse" in r for r in metrics(run))
    model, normalizer = load_idm(run)
    assert normalizer.action_mean.shape == (7,)


def test_idm_stage_refuses_video_only_data(video_file, tmp_path):
    with pytest.raises(UserError, match="without actions"):
        train(TrainConfig(stage="idm", data=str(video_file), out=str(tmp_path / "r"), steps=2, **TINY))


def test_random_shift_moves_each_window_rigidly():
    from gr2_sim.dataset import random_shift

    g = torch.Generator().manual_seed(0)
    cond = torch.rand(16, 3, 12, 12, generator=g)
    future = torch.stack([cond + 1, cond + 2], dim=1)  # (B, T, C, H, W): the same picture, offset in value
    assert random_shift([cond, future], 0, g)[0] is cond  # pad 0: untouched
    c2, f2 = random_shift([cond, future], 3, g)
    assert c2.shape == cond.shape and f2.shape == future.shape
    torch.testing.assert_close(f2[:, 0], c2 + 1)  # current and future frames moved together
    torch.testing.assert_close(f2[:, 1], c2 + 2)
    moved = 0
    for b in range(16):  # each sample is a translate of its original (within the interior)
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.equal(c2[b, :, 3:9, 3:9], cond[b, :, 3 + dy:9 + dy, 3 + dx:9 + dx])]
        assert found, b
        moved += found[0] != (0, 0)
    assert moved > 8


def test_shift_is_validated():
    with pytest.raises(UserError, match="--shift must be between 0 and 31"):
        TrainConfig(stage="action", data="x", out="y", shift=-1)
    with pytest.raises(UserError, match="--text-dropout must be a probability"):
        TrainConfig(stage="action", data="x", out="y", text_dropout=1.5)


def test_pure_noise_fraction_sets_the_noise_levels_of_the_action_stage():
    from types import SimpleNamespace

    from gr2_sim.objectives import diffusion_loss

    seen = []

    def model(cond, noisy, t, text, state, **kwargs):
        seen.append(t)
        return {}

    diffusion = SimpleNamespace(num_steps=100, q_sample=lambda x, t, n: x, target=lambda x, n, t: x)
    batch = {"cond": torch.zeros(400, 3, 8, 8), "future": torch.zeros(400, 2, 3, 8, 8), "text": torch.zeros(400, 4),
             "actions": torch.zeros(400, 2, 7)}
    for fraction in (0.0, 0.5, 1.0):
        diffusion_loss(model, diffusion, batch, 1.0, torch.Generator().manual_seed(0), True, 0.0, pure_noise=fraction)
        share = float((seen[-1] == 99).float().mean())
        assert abs(share - (fraction + (1 - fraction) / 100)) < 0.08, (fraction, share)
    with pytest.raises(UserError, match="--pure-noise must be a fraction"):
        TrainConfig(stage="action", data="x", out="y", pure_noise=1.5)


def test_video_weight_zero_trains_the_dit_on_actions_only(demo_file, tmp_path, capsys):
    from types import SimpleNamespace

    from gr2_sim.config import make_config
    from gr2_sim.model import VideoActionDiT
    from gr2_sim.objectives import diffusion_loss

    torch.manual_seed(0)
    model = VideoActionDiT(make_config("tiny", action_dim=7, state_dim=0, n_future=2))
    diffusion = SimpleNamespace(num_steps=100, q_sample=lambda x, t, n: x, target=lambda x, n, t: x)
    S = model.config.img_size
    batch = {"cond": torch.zeros(4, 3, S, S), "future": torch.rand(4, 2, 3, S, S),
             "text": torch.zeros(4, model.config.max_text_len, dtype=torch.long), "actions": torch.randn(4, 2, 7)}
    seen = []
    real_forward = model.forward
    model.forward = lambda *a, **k: seen.append(a[2]) or real_forward(*a, **k)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = diffusion_loss(model, diffusion, batch, 1.0, gen(), True, 0.0, video_weight=0.0)
    assert out["video_loss"] is None and out["video_pred"] is None and torch.equal(out["loss"], out["action_loss"])
    assert bool((seen[-1] == 99).all())  # no future frames to denoise: every future is pure noise
    out["loss"].backward()
    assert all(p.grad is None for p in model.final_layer.parameters())  # the video head learns nothing
    both = diffusion_loss(model, diffusion, batch, 1.0, gen(), True, 0.0, video_weight=0.5)
    torch.testing.assert_close(both["loss"], 0.5 * both["video_loss"] + both["action_loss"])

    base = ["train", "--stage", "action", "--data", str(demo_file), "--preset", "tiny", "--steps", "3",
            "--no-progress", "--eval-every", "3", "--ckpt-every", "3", "--video-weight", "0"]
    assert main([*base, "--out", str(tmp_path / "novideo")]) == 0
    logs = [r for r in metrics(tmp_path / "novideo") if "loss" in r]
    assert logs and all("video_loss" not in r and r["loss"] == r["action_loss"] for r in logs)
    assert json.loads((tmp_path / "novideo" / "config.json").read_text())["train"]["video_weight"] == 0.0
    base[base.index("action")] = "robot-video"
    assert main([*base, "--out", str(tmp_path / "bad")]) == 2
    assert "nothing to learn" in capsys.readouterr().err


def test_video_batch_runs_the_video_loss_on_part_of_the_batch_and_actions_on_all(demo_file, tmp_path):
    from types import SimpleNamespace

    import torch.nn.functional as F

    from gr2_sim.config import make_config
    from gr2_sim.model import VideoActionDiT
    from gr2_sim.objectives import diffusion_loss
    from gr2_sim.train_config import video_batch_for

    torch.manual_seed(0)
    model = VideoActionDiT(make_config("tiny", action_dim=7, state_dim=0, n_future=2, action_from_dit=False))
    diffusion = SimpleNamespace(num_steps=100, q_sample=lambda x, t, n: x, target=lambda x, n, t: x)
    S = model.config.img_size
    batch = {"cond": torch.rand(6, 3, S, S), "future": torch.rand(6, 2, 3, S, S),
             "text": torch.randint(1, 50, (6, model.config.max_text_len)), "actions": torch.randn(6, 2, 7)}
    seen = []
    real_forward = model.forward
    model.forward = lambda *a, **k: seen.append(a[0].shape[0]) or real_forward(*a, **k)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = diffusion_loss(model, diffusion, batch, 2.0, gen(), True, 0.0, video_batch=2, action_on_pure_noise=True)
    assert seen == [2]  # the transformer sees the first two samples
    expected = F.mse_loss(model.keypoint_actions(batch["cond"], batch["text"]).actions, batch["actions"])
    torch.testing.assert_close(out["action_loss"], expected)  # every sample, whatever its noise level
    torch.testing.assert_close(out["loss"], out["video_loss"] + 2.0 * out["action_loss"])
    seen.clear()
    diffusion_loss(model, diffusion, batch, 2.0, gen(), True, 0.0, video_batch=None)
    assert seen == [1]  # automatic: a quarter of the batch of 6 (at least one sample)
    seen.clear()
    diffusion_loss(model, diffusion, batch, 2.0, gen(), True, 0.0, video_batch=0)
    assert seen == [6]  # 0: the whole batch
    seen.clear()
    no_video = diffusion_loss(model, diffusion, batch, 1.0, gen(), True, 0.0, video_weight=0.0)
    assert not seen and no_video["video_loss"] is None  # actions only: no transformer pass at all
    lesson_readout = VideoActionDiT(make_config("tiny", action_dim=7, state_dim=0, n_future=2))
    with pytest.raises(UserError, match="action_from_dit=false"):
        diffusion_loss(lesson_readout, diffusion, batch, 1.0, gen(), True, 0.0, video_batch=2)
    seen_lesson = []
    lesson_forward = lesson_readout.forward
    lesson_readout.forward = lambda *a, **k: seen_lesson.append(a[0].shape[0]) or lesson_forward(*a, **k)
    diffusion_loss(lesson_readout, diffusion, batch, 1.0, gen(), True, 0.0, video_batch=None)
    assert seen_lesson == [6]  # automatic, for a head that reads the DiT's states: the whole batch
    assert (video_batch_for(None, 64, True), video_batch_for(None, 64, False), video_batch_for(0, 64, True),
            video_batch_for(8, 64, True)) == (16, 0, 0, 8)
    # a denoising action head: its loss is the noise MSE of the chunk, on every sample, and the CLI trains it
    denoiser = VideoActionDiT(make_config("tiny", action_dim=7, state_dim=0, n_future=2, action_from_dit=False,
                                          action_diffusion=10, action_sample_steps=2))
    out = diffusion_loss(denoiser, diffusion, batch, 2.0, gen(), True, 0.0, video_batch=2)
    assert out["actions"] is None and 0 < out["action_loss"].item() < 10  # the noise MSE, not sampled actions
    torch.testing.assert_close(out["loss"], out["video_loss"] + 2.0 * out["action_loss"])
    run = tmp_path / "denoiser"
    assert main(["train", "--stage", "action", "--data", str(demo_file), "--preset", "tiny", "--steps", "2",
                 "--no-progress", "--eval-every", "2", "--ckpt-every", "2", "--set", "action_from_dit=false",
                 "--set", "action_diffusion=10", "--set", "action_sample_steps=2", "--out", str(run)]) == 0
    assert [r for r in metrics(run) if "val_action_mse" in r]  # validation samples the chunk
    with pytest.raises(UserError, match="--video-batch 8"):
        TrainConfig(stage="video", data="x", out="y", video_batch=8)
    base = ["train", "--stage", "action", "--data", str(demo_file), "--preset", "tiny", "--steps", "3",
            "--no-progress", "--eval-every", "3", "--ckpt-every", "3", "--batch-size", "4", "--video-batch", "2",
            "--set", "action_from_dit=false", "--text-dropout", "0"]
    assert main([*base, "--out", str(tmp_path / "vb")]) == 0
    saved = json.loads((tmp_path / "vb" / "config.json").read_text())
    assert saved["train"]["video_batch"] == 2 and saved["video_batch"] == 2 and saved["train"]["text_dropout"] == 0.0
    # left out: a quarter of the batch of 4, resolved and saved beside the asked value (None)
    i = base.index("--video-batch")
    assert main([*base[:i], *base[i + 2:], "--out", str(tmp_path / "auto")]) == 0
    saved = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert saved["train"]["video_batch"] is None and saved["video_batch"] == 1
    logs = [r for r in metrics(tmp_path / "vb") if "loss" in r]
    assert logs and all("video_loss" in r and "action_loss" in r for r in logs)


def test_ema_decay_and_warmup_flags(demo_file, tmp_path, capsys):
    from gr2_sim.checkpoint import load_weights

    base = ["train", "--stage", "action", "--data", str(demo_file), "--preset", "tiny", "--steps", "3",
            "--no-progress", "--eval-every", "3", "--ckpt-every", "3"]
    assert main([*base, "--out", str(tmp_path / "raw"), "--ema-decay", "0", "--warmup", "0"]) == 0
    saved = json.loads((tmp_path / "raw" / "config.json").read_text())["train"]
    assert (saved["ema_decay"], saved["warmup"]) == (0.0, 0)
    ema, raw = load_weights(tmp_path / "raw", "ema"), load_weights(tmp_path / "raw", "model")
    torch.testing.assert_close(ema, raw)  # decay 0: the EMA is the raw weights
    assert main([*base, "--out", str(tmp_path / "avg")]) == 0
    ema, raw = load_weights(tmp_path / "avg", "ema"), load_weights(tmp_path / "avg", "model")
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)
    for flag, value, message in (("--ema-decay", "1", "--ema-decay must be in [0, 1)"),
                                 ("--warmup", "-5", "--warmup must be >= 0")):
        assert main([*base, "--out", str(tmp_path / "bad"), flag, value]) == 2
        assert message in capsys.readouterr().err


def test_compile_falls_back_to_eager_and_leaves_the_run_unchanged(demo_file, tmp_path, monkeypatch):
    from gr2_sim.checkpoint import load_weights

    eager = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "eager"), steps=3, **TINY))

    class Broken(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            self.module(*args, **kwargs)  # uses the random streams, then fails as a failed compile would
            raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", Broken)
    with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler.*training eagerly"):
        run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "fallback"), steps=3,
                                compile=True, **TINY))
    # the failed attempt leaves no trace: same weights as the eager run, step for step
    torch.testing.assert_close(load_weights(run, "model"), load_weights(eager, "model"))
    assert json.loads((run / "config.json").read_text())["train"]["compile"] is True


def test_compile_trains(demo_file, tmp_path):
    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "c"), steps=2, compile=True,
                            **TINY))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2 and all(math.isfinite(m["loss"]) for m in metrics if "loss" in m)


def test_aux_state_trains_a_privileged_head_the_policy_never_runs(dataset_writer, tmp_path, monkeypatch):
    """--aux-state K: the last K state values become targets of the auxiliary head; the model reads the rest,
    the run is evaluated without object_state, and a policy's queries never run the auxiliary head."""
    from gr2_sim import checkpoint as ckpt
    from gr2_sim.evaluate import trained_env_kwargs
    from policies.gr2 import GR2Policy

    data = dataset_writer(tmp_path / "os.hdf5", env_kwargs={"object_state": True})
    run = train(TrainConfig(stage="action", data=str(data), out=str(tmp_path / "aux"), steps=4, preset="tiny",
                            batch_size=4, progress=False, eval_every=4, ckpt_every=4, aux_state=2))
    config = ckpt.load_config(run)
    assert (config["model"]["aux_dim"], config["model"]["state_dim"]) == (2, 6)
    assert config["env_kwargs"] == {} and config["data_env_kwargs"] == {"object_state": True}
    assert len(ckpt.load_normalizer(run).state_mean) == 6
    assert trained_env_kwargs(run, config["env_id"], None, say=False) == {}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("aux_loss", 0) > 0 for r in records)
    policy = GR2Policy.from_checkpoint(run)
    monkeypatch.setattr(policy.model.aux_head, "forward", lambda *a: pytest.fail("aux head ran at inference"))
    obs = {"image": np.zeros((64, 64, 3), np.uint8), "state": np.zeros(6, np.float32)}
    policy.reset()
    assert policy.select_action(obs).shape == (7,)
    with pytest.raises(UserError, match="at most 7 can be auxiliary"):
        train(TrainConfig(stage="action", data=str(data), out=str(tmp_path / "bad"), steps=1, preset="tiny",
                          progress=False, aux_state=8))
    with pytest.raises(UserError, match="auxiliary targets are for --stage action"):
        TrainConfig(stage="video", data=str(data), out=str(tmp_path / "v"), aux_state=2)


def test_keypoint_decoder_trains_in_the_video_phases_and_beside_the_actions(dataset_writer, tmp_path):
    """--set keypoint_decoder=SIDE: the decoder's loss is logged in a video-only phase and in phase 3 with
    --video-batch (where it counts every sample)."""
    data = dataset_writer(tmp_path / "d.hdf5")
    overrides = {"keypoint_decoder": 8, "action_from_dit": False}
    video = train(TrainConfig(stage="robot-video", data=str(data), out=str(tmp_path / "p2"), steps=2, preset="tiny",
                              batch_size=4, progress=False, eval_every=2, ckpt_every=2, overrides=overrides))
    action = train(TrainConfig(stage="action", data=str(data), out=str(tmp_path / "p3"), steps=2, batch_size=4,
                               progress=False, eval_every=2, ckpt_every=2, init=str(video), video_batch=2))
    for run in (video, action):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("recon_loss", 0) > 0 for r in records), run
    with pytest.raises(UserError, match="--recon-weight"):
        TrainConfig(stage="action", data=str(data), out=str(tmp_path / "bad"), recon_weight=-1.0)
