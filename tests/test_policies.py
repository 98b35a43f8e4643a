"""The policy contract: action-queue cadence, temporal ensembling, the three GR-2 readouts, the IDM."""

from __future__ import annotations

import copy
import math
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import envs  # noqa: F401  (registers GR2Sim/*, sets MUJOCO_GL before mujoco loads)
from gr2_sim.checkpoint import load_normalizer
from gr2_sim.data import load_episodes
from gr2_sim.dataset import WindowSampler
from gr2_sim.errors import UserError
from gr2_sim.train import TrainConfig, train
from policies.base import ChunkedPolicy
from policies.gr2 import GR2Policy
from policies.inverse_dynamics import IDMConfig, InverseDynamicsModel, load_idm, save_idm_run
from policies.scripted import ExpertPolicy, RandomPolicy

T, A = 4, 3


class CountingPolicy(ChunkedPolicy):
    """Query q returns actions[j] = 100 * q + j (every dimension), so each action names its query and offset."""

    def __init__(self, n_action_steps: int = 1, temporal_ensemble: float | None = None, horizon: int = T,
                 declare_horizon: bool = True):
        super().__init__(n_action_steps, horizon if declare_horizon else None, temporal_ensemble)
        self.horizon = horizon

    def predict_chunk(self, obs):
        q = self.query_count  # queries so far
        actions = 100.0 * q + np.arange(self.horizon, dtype=np.float32)
        return np.repeat(actions[:, None], A, axis=1), None


OBS = {"image": np.zeros((64, 64, 3), np.uint8), "state": np.zeros(8, np.float32)}


# ----------------------------------------------------------------------------------------- the action queue
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_queue_queries_every_k_steps_and_executes_the_first_k_actions(k):
    policy = CountingPolicy(n_action_steps=k)
    actions = [policy.select_action(OBS)[0] for _ in range(12)]
    assert policy.query_count == math.ceil(12 / k)
    assert actions == [100.0 * (t // k) + t % k for t in range(12)]


def test_reset_clears_the_queue():
    policy = CountingPolicy(n_action_steps=4)
    policy.select_action(OBS)
    policy.reset()
    assert policy.select_action(OBS)[0] == 100.0  # a fresh query, not the queued action 1
    assert policy.query_count == 2


def test_temporal_ensemble_averages_overlapping_chunks_oldest_first():
    m, horizon = 0.5, 3
    policy = CountingPolicy(temporal_ensemble=m, horizon=horizon)
    for t in range(6):
        got = policy.select_action(OBS)
        queries = list(range(max(0, t - horizon + 1), t + 1))  # the chunks covering step t, oldest first
        preds = np.array([100.0 * q + (t - q) for q in queries])
        weights = np.exp(-m * np.arange(len(queries)))
        np.testing.assert_allclose(got, np.full(A, (weights * preds).sum() / weights.sum()), rtol=1e-6)
    assert policy.query_count == 6


def test_chunk_settings_are_validated():
    with pytest.raises(ValueError, match="n_action_steps=1"):
        CountingPolicy(n_action_steps=2, temporal_ensemble=0.01)
    with pytest.raises(ValueError, match="exceeds the chunk size"):
        CountingPolicy(n_action_steps=T + 1)
    short = CountingPolicy(n_action_steps=4, horizon=2, declare_horizon=False)  # checked at the first query
    with pytest.raises(ValueError, match="T >= n_action_steps=4"):
        short.select_action(OBS)


# ----------------------------------------------------------------------------------------- reference policies
def test_expert_and_random_policies():
    env = gym.make("GR2Sim/Reach-v0")
    policy = ExpertPolicy(env)
    obs, _ = env.reset(seed=1_000_000)
    policy.reset()
    assert policy.select_action(obs).shape == (7,) and policy.query_count == 1
    env.close()
    with pytest.raises(UserError, match="no scripted expert"):
        ExpertPolicy(gym.make("InvertedPendulum-v5"))
    discrete = RandomPolicy(spaces.Discrete(3), seed=0)
    assert discrete.select_action(OBS).shape == (1,)


# ----------------------------------------------------------------------------------------- GR-2 readouts
@pytest.fixture(scope="module")
def runs(demo_file, tmp_path_factory):
    """A tiny action-stage run (T = 2, 7-D actions, 8-D state) and a random-weight IDM run beside it."""
    root = tmp_path_factory.mktemp("runs")
    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(root / "dit"), preset="tiny", steps=3,
                            batch_size=4, progress=False))
    torch.manual_seed(0)
    idm = InverseDynamicsModel(IDMConfig(state_dim=8, channels=(8, 16, 16, 16), hidden=32))
    save_idm_run(root / "idm", idm, copy.deepcopy(idm), load_normalizer(run), step=0)
    return {"dit": run, "idm": root / "idm", "root": root}


def make(runs, mode, **kw):
    return GR2Policy.from_checkpoint(runs["dit"], mode=mode, ddim_steps=2, num_threads=1,
                                     idm_run=runs["idm"] if mode == "idm" else None, **kw)


@pytest.mark.parametrize("mode", ["head", "denoise", "idm"])
def test_each_readout_gives_a_chunk_and_does_not_mutate_the_observation(runs, mode):
    policy = make(runs, mode, n_action_steps=1)
    policy.set_action_space(spaces.Box(-0.5, 0.5, (7,), np.float32))
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "state": rng.normal(size=8).astype(np.float32)}
    before = copy.deepcopy(obs)
    for value in obs.values():
        value.setflags(write=False)  # any in-place write would raise
    policy.reset()
    policy.set_instruction("touch the red cube")
    actions, frames = policy.predict_chunk(obs)
    assert actions.shape == (2, 7) and actions.dtype == np.float32 and np.abs(actions).max() <= 0.5
    if mode == "head":
        assert frames is None
    else:
        assert frames.shape == (2, 64, 64, 3) and frames.dtype == np.uint8
    assert policy.select_action(obs).shape == (7,)
    for key in obs:
        np.testing.assert_array_equal(obs[key], before[key])


def test_instruction_is_tokenized_once_and_noise_is_reseeded_on_reset(runs, monkeypatch):
    policy = make(runs, "denoise")
    calls = []
    real = policy.model.text_encoder.tokenize
    monkeypatch.setattr(policy.model.text_encoder, "tokenize", lambda texts: calls.append(texts) or real(texts))
    policy.reset()
    policy.set_instruction("touch the red cube")
    first = policy.predict_chunk(OBS)
    policy.predict_chunk(OBS)
    policy.reset()
    again = policy.predict_chunk(OBS)
    assert calls == [["touch the red cube"]]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_checkpoint_errors_are_user_errors(runs, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        GR2Policy.from_checkpoint(tmp_path / "nope")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(runs["dit"] / "config.json", partial)
    with pytest.raises(UserError, match="incomplete: missing model.safetensors"):
        GR2Policy.from_checkpoint(partial)
    with pytest.raises(UserError, match="inverse-dynamics run"):
        GR2Policy.from_checkpoint(runs["idm"])
    with pytest.raises(UserError, match="needs an inverse-dynamics run"):
        GR2Policy.from_checkpoint(runs["dit"], mode="idm")
    with pytest.raises(UserError, match="exceeds the chunk size"):
        GR2Policy.from_checkpoint(runs["dit"], n_action_steps=3)


def test_env_compatibility_is_checked(runs):
    policy = make(runs, "head")
    pendulum = gym.make("InvertedPendulum-v5", render_mode="rgb_array", width=16, height=16)
    with pytest.raises(UserError, match="predicts 7-D actions but InvertedPendulum-v5 takes 1-D"):
        policy.check_env_compat(pendulum)
    small = gym.make("GR2Sim/Reach-v0", image_size=32)
    with pytest.raises(UserError, match="32px frames"):
        policy.check_env_compat(small)
    policy.check_env_compat(gym.make("GR2Sim/Reach-v0"))


# ----------------------------------------------------------------------------------------- inverse dynamics
def test_idm_loss_on_a_training_batch_and_save_load_round_trip(runs, demo_file, tmp_path):
    normalizer = load_normalizer(runs["dit"])
    sampler = WindowSampler(load_episodes(demo_file, split="train"), n_future=3, normalizer=normalizer,
                            max_text_len=8, vocab_size=2048)
    batch = sampler.sample(4, torch.Generator().manual_seed(0))
    model = InverseDynamicsModel(IDMConfig(state_dim=8, channels=(8, 16, 16, 16), hidden=32))
    out = model.compute_loss(batch)
    assert set(out) == {"loss", "action_loss"} and out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.head[-1].weight.grad is not None
    pred = model.chunk_actions(batch["cond"], batch["future"], batch["state"])
    assert pred.shape == (4, 3, 7)  # pairs (cond, f0), (f0, f1), (f1, f2)
    torch.testing.assert_close(pred[:, 0], model(batch["cond"], batch["future"][:, 0], batch["state"]))

    save_idm_run(tmp_path / "idm", model, model, normalizer, step=5)
    loaded, loaded_norm = load_idm(tmp_path / "idm")
    torch.testing.assert_close(loaded.chunk_actions(batch["cond"], batch["future"], batch["state"]), pred)
    np.testing.assert_array_equal(loaded_norm.action_mean, normalizer.action_mean)
    with pytest.raises(UserError, match="not an inverse-dynamics run"):
        load_idm(runs["dit"])
    with pytest.raises(UserError, match="divisible"):
        IDMConfig(img_size=40)
