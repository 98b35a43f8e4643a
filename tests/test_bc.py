"""The plain image-BC baseline (policies/bc.py, --stage bc): shapes, learning, run folders, resume, contract."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors.torch import load_file

import gr2_sim.train as train_mod
from gr2_sim import checkpoint as ckpt
from gr2_sim.cli import main
from gr2_sim.data import load_episodes
from gr2_sim.dataset import Normalizer, WindowSampler
from gr2_sim.errors import UserError
from gr2_sim.train import TrainConfig, train
from policies.bc import BCConfig, BCModel, BCPolicy, load_bc, spatial_softmax

SMALL = dict(channels=(8, 8, 16, 16), lang_dim=16, hidden=32)
TINY = dict(batch_size=4, eval_every=3, ckpt_every=3, progress=False, val_windows=8,
            overrides={"channels": [8, 8, 16, 16], "hidden": 32})


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_shapes_and_the_spatial_softmax(one_torch_thread):
    model = BCModel(BCConfig(state_dim=8, horizon=3, action_dim=5, **SMALL))
    tokens = model.tokenize(["push the red cube", ""])
    out = model(torch.zeros(2, 3, 64, 64), tokens, torch.zeros(2, 8))
    assert out.shape == (2, 3, 5)
    with pytest.raises(UserError, match=r"needs a \(B, 8\) state"):
        model(torch.zeros(2, 3, 64, 64), tokens)
    with pytest.raises(UserError, match="must be"):
        model(torch.zeros(2, 3, 32, 32), tokens, torch.zeros(2, 8))
    # a single hot cell: its keypoint is that cell's (x, y) in [-1, 1]
    features = torch.full((1, 2, 5, 5), -1e4)
    features[0, 0, 4, 0] = 0.0  # row 4 (y = +1), column 0 (x = -1)
    features[0, 1, 2, 2] = 0.0  # the centre
    torch.testing.assert_close(spatial_softmax(features), torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))
    # FiLM starts as the identity: the instruction changes nothing before training
    a = model(torch.ones(1, 3, 64, 64), model.tokenize(["push the red cube"]), torch.zeros(1, 8))
    b = model(torch.ones(1, 3, 64, 64), model.tokenize(["push the blue cube"]), torch.zeros(1, 8))
    torch.testing.assert_close(a, b)
    flops = model.estimate_flops()
    first_conv = 2 * 32 * 32 * 27 * 8  # 3x3x3 -> 8 channels at stride 2: 32x32 outputs
    assert flops["train_step"] == 3 * flops["forward"] and flops["forward"] > first_conv
    with pytest.raises(UserError, match="divisible"):
        BCConfig(img_size=50)
    with pytest.raises(UserError, match="unknown BCConfig field"):
        BCConfig.from_dict({"n_layers": 2})


def test_head_layers_stack_hidden_layers_and_count_their_flops(one_torch_thread):
    shallow, deep = (BCModel(BCConfig(state_dim=8, head_layers=n, **SMALL)) for n in (1, 3))
    linears = [m for m in deep.head if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [32, 32, 32, 4 * 7]
    assert len([m for m in shallow.head if isinstance(m, torch.nn.Linear)]) == 2
    extra = deep.estimate_flops()["forward"] - shallow.estimate_flops()["forward"]
    assert extra == 2 * (2 * 32 * 32)  # two more 32x32 matmuls per sample
    tokens = deep.tokenize(["push the red cube"])
    assert deep(torch.zeros(1, 3, 64, 64), tokens, torch.zeros(1, 8)).shape == (1, 4, 7)
    with pytest.raises(UserError, match="head_layers=0"):
        BCConfig(head_layers=0)


def test_overfits_one_batch(demo_file, one_torch_thread):
    torch.manual_seed(0)
    episodes = load_episodes(demo_file, split="train")
    normalizer = Normalizer.fit(episodes)
    sampler = WindowSampler(episodes, n_future=4, normalizer=normalizer, max_text_len=16, vocab_size=2048)
    batch = sampler.sample(8, torch.Generator().manual_seed(0))
    model = BCModel(BCConfig(state_dim=8, **SMALL))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = model.compute_loss(batch)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first, (first, loss.item())


def test_train_stage_bc_writes_a_run_that_loads_back(demo_file, tmp_path, one_torch_thread):
    run = train(TrainConfig(stage="bc", data=str(demo_file), out=str(tmp_path / "bc"), steps=6, **TINY))
    for name in ("config.json", "model.safetensors", "normalizer.json", "trainer_state.pt", "metrics.jsonl"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "bc" and config["stage"] == "bc"
    assert config["model"]["channels"] == [8, 8, 16, 16] and config["model"]["state_dim"] == 8
    logs = metrics(run)
    assert any("action_loss" in r and "samples_per_s" in r for r in logs)
    assert any("val_action_mse" in r for r in logs)

    model, normalizer = load_bc(run)  # the EMA weights, as saved
    weights = load_file(str(run / "model.safetensors"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, weights[f"ema.{key}"], rtol=0, atol=0)
    np.testing.assert_array_equal(normalizer.action_mean, ckpt.load_normalizer(run).action_mean)
    with pytest.raises(UserError, match="trains from scratch"):
        train(TrainConfig(stage="bc", data=str(demo_file), out=str(tmp_path / "x"), init=str(run), steps=2, **TINY))
    with pytest.raises(UserError, match="drop --preset"):
        train(TrainConfig(stage="bc", data=str(demo_file), out=str(tmp_path / "x"), preset="tiny", steps=2, **TINY))
    with pytest.raises(UserError, match="unknown BCConfig field"):
        train(TrainConfig(stage="bc", data=str(demo_file), out=str(tmp_path / "x"), steps=2,
                          **{**TINY, "overrides": {"n_layers": 2}}))


def test_resume_gives_the_weights_of_an_uninterrupted_run(demo_file, tmp_path, monkeypatch, one_torch_thread):
    common = dict(stage="bc", data=str(demo_file), steps=8, seed=3, **{**TINY, "ckpt_every": 4})
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
    assert ckpt.load_trainer_state(tmp_path / "killed")["step"] == 4
    resumed = train(TrainConfig(out=str(tmp_path / "killed"), resume=True, **common))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


@pytest.fixture(scope="module")
def bc_run(demo_file, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = train(TrainConfig(stage="bc", data=str(demo_file), out=str(tmp_path_factory.mktemp("bc") / "run"),
                            steps=3, **TINY))
    torch.set_num_threads(threads)
    return run


def test_policy_contract_and_no_input_mutation(bc_run, one_torch_thread):
    policy = BCPolicy.from_checkpoint(bc_run, n_action_steps=2, num_threads=1)
    policy.set_action_space(spaces.Box(-0.5, 0.5, (7,), np.float32))
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "state": rng.normal(size=8).astype(np.float32)}
    before = copy.deepcopy(obs)
    for value in obs.values():
        value.setflags(write=False)  # any in-place write would raise
    policy.reset()
    policy.set_instruction("push the red cube")
    actions, frames = policy.predict_chunk(obs)
    assert actions.shape == (4, 7) and actions.dtype == np.float32 and np.abs(actions).max() <= 0.5
    assert frames is None
    assert policy.select_action(obs).shape == (7,) and policy.query_count == 1
    policy.select_action(obs)
    policy.select_action(obs)
    assert policy.query_count == 2  # two actions per query
    for key in obs:
        np.testing.assert_array_equal(obs[key], before[key])
    assert policy.describe()["type"] == "BCPolicy"
    with pytest.raises(UserError, match="exceeds the chunk size"):
        BCPolicy.from_checkpoint(bc_run, n_action_steps=5)


def test_bc_runs_in_dit_only_places_say_they_have_no_video_half(bc_run, tmp_path, capsys):
    from gr2_sim.evaluate import make_policy
    from policies.gr2 import GR2Policy

    with pytest.raises(UserError, match="no video half, so --mode denoise"):
        make_policy("gr2", "GR2Sim/Reach-v0", ckpt=str(bc_run), mode="denoise")
    with pytest.raises(UserError, match="no video half.*gr2-sim eval --ckpt RUN"):
        ckpt.load_dit(bc_run, what="the attention study")
    with pytest.raises(UserError, match="no video half"):
        GR2Policy.from_checkpoint(bc_run)
    argv = ["eval", "--ckpt", str(bc_run), "--env", "GR2Sim/Reach-v0", "--episodes", "1", "--out",
            str(tmp_path / "ev"), "--mode", "denoise", "--no-progress"]
    assert main(argv) == 2
    assert "no video half" in capsys.readouterr().err


def test_gr2_sim_eval_rolls_a_bc_run_out(bc_run, tmp_path):
    argv = ["eval", "--ckpt", str(bc_run), "--env", "GR2Sim/Reach-v0", "--episodes", "1", "--out",
            str(tmp_path / "ev"), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["config"]["policy"]["type"] == "BCPolicy" and report["aggregated"]["episodes"] == 1
