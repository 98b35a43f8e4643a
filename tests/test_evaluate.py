"""``gr2-sim eval``: the runner, eval.json, videos, intervals, and every bad input as exit code 2."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
from gymnasium import spaces

import gr2_sim.video as video
from gr2_sim.cli import main
from gr2_sim.data import TEST_SEED_START
from gr2_sim.errors import UserError
from gr2_sim.evaluate import evaluate, evaluate_run, success_by_word
from gr2_sim.stats import newcombe_difference, percentile_summary, wilson_interval
from gr2_sim.train import TrainConfig, train
from policies.base import Policy

REACH = "GR2Sim/Reach-v0"
SHORT = '{"max_episode_steps": 5}'  # short episodes keep model rollouts fast


@pytest.fixture(scope="module")
def run(demo_file, tmp_path_factory):
    """A tiny action-stage run: T = 2, 7-D actions, 8-D state, 64 px (fits GR2Sim/Reach-v0)."""
    return train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path_factory.mktemp("ev") / "run"),
                             preset="tiny", steps=3, batch_size=4, progress=False))


def eval_args(out, *extra: str, env: str = REACH, episodes: int = 1) -> list[str]:
    return ["eval", "--env", env, "--episodes", str(episodes), "--out", str(out), "--no-progress", *extra]


# ----------------------------------------------------------------------------------------- statistics
def test_wilson_and_newcombe_match_published_values():
    low, high = wilson_interval(17, 20)
    assert low == pytest.approx(0.6396, abs=1e-4) and high == pytest.approx(0.9476, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    d, low, high = newcombe_difference(56, 70, 48, 80)  # Newcombe (1998), method 10 example
    assert d == pytest.approx(0.2) and low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)
    with pytest.raises(ValueError, match="at least one episode"):
        wilson_interval(0, 0)
    assert percentile_summary([1.0, 2.0, 3.0, 4.0])["median"] == 2.5 and percentile_summary([])["n"] == 0


# ----------------------------------------------------------------------------------------- expert rollouts
def test_expert_succeeds_and_eval_json_has_the_schema(tmp_path):
    assert main(eval_args(tmp_path, "--policy", "expert", "--videos", "1", episodes=4)) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report) == {"per_episode", "aggregated", "config"}
    episodes = report["per_episode"]
    assert [e["seed"] for e in episodes] == list(range(TEST_SEED_START, TEST_SEED_START + 4))
    for e in episodes:
        assert {"seed", "success", "length", "instruction", "return", "queries", "unstable", "video"} <= set(e)
        assert e["instruction"].endswith("cube") and e["queries"] == e["length"]  # the expert queries every step
    agg = report["aggregated"]
    assert agg["success_rate"] >= 0.95 and agg["episodes"] == 4
    low, high = agg["success_ci95"]
    assert 0 < low <= agg["success_rate"] <= high <= 1
    assert agg["mean_length"] == np.mean([e["length"] for e in episodes])
    assert agg["query_latency_ms"]["n"] == sum(e["length"] for e in episodes)
    assert agg["query_latency_ms"]["median"] <= agg["query_latency_ms"]["p95"]
    assert report["config"]["env_id"] == REACH and report["config"]["policy"]["type"] == "ExpertPolicy"
    progress = agg["goal_distance"]  # the expert ends every episode at the cube it started 10+ cm from
    assert progress["episodes"] == 4 and progress["closer_fraction"] == 1.0
    assert progress["end_mean"] < 0.03 < 0.1 < progress["start_mean"]
    assert progress["start_mean"] == pytest.approx(np.mean([e["goal_distance_start"] for e in episodes]))
    clip = tmp_path / episodes[0]["video"]
    assert clip.exists() and clip.stat().st_size > 0 and episodes[1]["video"] is None
    assert imageio.mimread(clip)[0].shape == (256 + video.CAPTION, 256, 3)  # no predictions: camera only


# ----------------------------------------------------------------------------------------- model rollouts
@pytest.mark.parametrize("k", [1, 2])
def test_model_is_queried_every_k_steps(run, tmp_path, k):
    agg = evaluate_run(run, REACH, episodes=2, mode="head", env_kwargs=json.loads(SHORT), n_action_steps=k,
                       out_dir=tmp_path)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["aggregated"] == agg and report["config"]["policy"]["mode"] == "head"
    for e in report["per_episode"]:
        assert e["queries"] == math.ceil(e["length"] / k)
    assert agg["query_latency_ms"]["n"] == sum(e["queries"] for e in report["per_episode"])


def test_policy_queries_give_the_eager_models_actions_without_deprecation_warnings(run):
    """The policy's fast path is the eager model under inference_mode: its chunks are the model's own head and
    DDIM actions (no TorchScript: loading and querying raise no DeprecationWarning)."""
    import torch

    from gr2_sim.diffusion import Diffusion
    from policies.gr2 import GR2Policy

    obs = {"image": np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
           "state": np.linspace(-1, 1, 8).astype(np.float32)}
    for mode in ("head", "denoise"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            policy = GR2Policy.from_checkpoint(run, mode=mode, ddim_steps=2, device="cpu", num_threads=1)
            policy.reset()
            policy.set_instruction("move the red square")
            actions, _ = policy.predict_chunk(obs)
        model, diffusion = policy.model, Diffusion(policy.model.config)
        cond, raw_state = policy._inputs(obs)
        state = policy.state_normalizer.normalize_states(raw_state)
        generator = torch.Generator().manual_seed(policy.seed)
        with torch.no_grad():
            if mode == "head":
                expected = diffusion.head_actions(model, cond, policy._tokens, state, generator)
            else:
                expected = diffusion.ddim_sample(model, cond, policy._tokens, state, 2, generator=generator,
                                                 return_actions=True)[1]
        expected = policy.action_normalizer.unnormalize_actions(expected[0]).float().numpy()
        np.testing.assert_allclose(actions, expected, atol=1e-5, rtol=0, err_msg=mode)


def test_denoise_video_shows_predicted_frames(run, tmp_path):
    args = eval_args(tmp_path, "--ckpt", str(run), "--mode", "denoise", "--ddim-steps", "2", "--videos", "1",
                     "--env-kwargs", SHORT)
    assert main(args) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    frames = imageio.mimread(tmp_path / report["per_episode"][0]["video"])
    assert len(frames) == report["per_episode"][0]["length"] + 1
    assert frames[0].shape == (256 + video.CAPTION, 256 + 2 * video.TILE, 3)  # camera | predicted frames
    assert frames[0][:video.TILE, 256:].std() > 0  # the panel holds the model's (noisy) frames


def test_video_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "ffmpeg_available", lambda: False)
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(3)]
    path = video.write_video(tmp_path / "clip.mp4", frames)
    assert path.suffix == ".gif" and path.stat().st_size > 0 and len(imageio.mimread(path)) == 3


class SingleStepPolicy(Policy):
    """Implements the contract directly (no queue, no query_count): every select_action counts as a query."""

    def __init__(self, action_dim: int):
        self.action_dim, self.instructions, self.resets = action_dim, [], 0

    def reset(self):
        self.resets += 1

    def set_instruction(self, text):
        self.instructions.append(text)

    def select_action(self, obs):
        assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
        return self.predict_chunk(obs)[0][0]

    def predict_chunk(self, obs):
        return np.zeros((1, self.action_dim), np.float32), None


def test_runner_takes_any_policy_and_warns_when_the_env_has_no_instruction():
    policy = SingleStepPolicy(action_dim=1)
    with pytest.warns(UserWarning) as caught:
        report = evaluate(policy, "InvertedPendulum-v5", episodes=2, progress=False,
                          env_kwargs={"width": 16, "height": 16, "max_episode_steps": 3})
    messages = [str(w.message) for w in caught]
    assert sum("no instruction" in m for m in messages) == 1 and sum("is_success" in m for m in messages) == 1
    assert policy.instructions == ["", ""] and policy.resets == 2
    assert [e["instruction"] for e in report["per_episode"]] == ["", ""]
    agg = report["aggregated"]
    assert agg["query_latency_ms"]["n"] == sum(e["length"] for e in report["per_episode"])
    assert agg["goal_distance"] is None and report["per_episode"][0]["goal_distance_end"] is None  # not reported
    with pytest.raises(UserError, match="needs 7 finite values"):
        evaluate(SingleStepPolicy(action_dim=3), REACH, episodes=1, progress=False)


# ----------------------------------------------------------------------------------------- bad input: exit 2
def bad_cases(run, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir(exist_ok=True)
    shutil.copy(run / "config.json", partial)
    ckpt = ["--ckpt", str(run)]
    return [
        ([*ckpt, "--episodes", "0"], "--episodes must be at least 1"),
        (["--ckpt", str(tmp_path / "missing")], "does not exist"),
        (["--ckpt", str(partial)], "incomplete: missing model.safetensors"),
        ([*ckpt, "--env", "InvertedPendulum-v5"], "predicts 7-D actions"),
        ([*ckpt, "--env-kwargs", '{"image_size": 32}'], "32px frames"),
        ([*ckpt, "--seed-start", "5"], "data seeds"),
        ([*ckpt, "--env", "NoSuchEnv-v0"], "unknown env id"),
        ([*ckpt, "--mode", "idm"], "--idm RUN"),
        ([*ckpt, "--n-action-steps", "9"], "exceeds the chunk size"),
        ([], "needs --ckpt"),
        ([*ckpt, "--policy", "random"], "only read by --policy gr2"),
    ]


def test_bad_input_exits_2_with_one_line(run, tmp_path, capsys):
    for extra, message in bad_cases(run, tmp_path):
        assert main(eval_args(tmp_path / "out", *extra)) == 2, extra  # a repeated flag: the later one wins
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "out" / "eval.json").exists()



def test_evaluate_run_gives_torch_threads_back(demo_file, tmp_path):
    """A sweep trains again after evaluating: evaluation must not leave torch on fewer threads."""
    import torch

    from gr2_sim.evaluate import evaluate_run
    from gr2_sim.train import TrainConfig, train

    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "r"), preset="tiny",
                            steps=2, batch_size=2, progress=False))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        evaluate_run(run, "GR2Sim/Reach-v0", episodes=1, num_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_success_by_word_counts_the_varying_words_worst_first():
    episodes = [{"instruction": "touch the red cube", "success": True},
                {"instruction": "touch the red cube", "success": True},
                {"instruction": "reach the orange cube", "success": False},
                {"instruction": "touch the orange cube", "success": True}]
    rows = success_by_word(episodes)
    assert list(rows)[:2] == ["reach", "orange"] and "the" not in rows and "cube" not in rows  # in every instruction
    assert (rows["orange"]["successes"], rows["orange"]["episodes"]) == (1, 2)
    assert (rows["touch"]["successes"], rows["touch"]["episodes"]) == (3, 3) and rows["reach"]["success_rate"] == 0
    low, high = rows["orange"]["success_ci95"]
    assert 0 < low < 0.5 < high < 1
    assert success_by_word([{"instruction": "", "success": True}]) == {}


def test_eval_uses_the_env_kwargs_the_run_was_trained_with(dataset_writer, tmp_path, capsys):
    """A run trained on object_state=True data (14-D state) is evaluated with those kwargs unless told else."""
    data = dataset_writer(tmp_path / "obj.hdf5", episodes=4, state_dim=14, env_id=REACH,
                          env_kwargs={"object_state": True})
    run = train(TrainConfig(stage="action", data=str(data), out=str(tmp_path / "r"), preset="tiny", steps=2,
                            batch_size=2, progress=False))
    assert json.loads((run / "config.json").read_text())["env_kwargs"] == {"object_state": True}
    assert main(eval_args(tmp_path / "e", "--ckpt", str(run), "--env-kwargs", SHORT)) == 2  # told else: 8-D state
    assert "14-D state" in capsys.readouterr().err
    assert main(eval_args(tmp_path / "e", "--ckpt", str(run))) == 0
    assert "the ones" in capsys.readouterr().out
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["config"]["env_kwargs"] == {"object_state": True}
    assert main(eval_args(tmp_path / "p", "--ckpt", str(run), env="GR2Sim/Push-v0")) == 2  # not the run's env
    assert "14-D state" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- progress metric
class ScriptedProgressEnv(gym.Env):
    """Episode i replays TRAJECTORIES[i]: (goal distance, object x) per step, from reset to the last step."""

    TRAJECTORIES = [
        [(0.20, 0.0), (0.20, 0.0), (0.20 - 1e-11, 1e-11)],  # settling noise only
        [(0.20, 0.0), (0.18, 0.02), (0.15, 0.05)],  # pushed 5 cm towards the goal
        [(0.20, 0.0), (0.25, -0.05), (0.20, 0.0)],  # pushed away and back
        [(0.20, 0.0), (0.197, 0.003), (0.195, 0.005)],  # nudged 5 mm
        [(0.20, 0.0), (0.20, 0.02), (0.20, 0.03)],  # slid 3 cm around the goal, at the same distance
    ]
    metadata = {"render_modes": []}

    def __init__(self, report_object: bool = True):
        self.observation_space = spaces.Dict({"image": spaces.Box(0, 255, (64, 64, 3), np.uint8),
                                              "state": spaces.Box(-1, 1, (1,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)
        self.report_object = report_object
        self.instruction = "push the cube"

    def _step_out(self):
        distance, x = self.TRAJECTORIES[self.episode][self.t]
        info = {"is_success": False, "goal_distance": distance}
        if self.report_object:
            info["object_position"] = [x, 0.0, 0.02]
        return {"image": np.zeros((64, 64, 3), np.uint8), "state": np.zeros(1, np.float32)}, info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = seed - TEST_SEED_START, 0
        return self._step_out()

    def step(self, action):
        self.t += 1
        obs, info = self._step_out()
        return obs, 0.0, False, self.t == len(self.TRAJECTORIES[self.episode]) - 1, info


class StillPolicy(Policy):
    def reset(self):
        pass

    def select_action(self, obs):
        return np.zeros(1, np.float32)

    def predict_chunk(self, obs):
        return np.zeros((1, 1), np.float32), None


@pytest.mark.parametrize("report_object", [True, False])
def test_progress_counts_only_changes_beyond_the_threshold(report_object):
    n = len(ScriptedProgressEnv.TRAJECTORIES)
    report = evaluate(StillPolicy(), ScriptedProgressEnv(report_object), episodes=n, progress=False)
    g = report["aggregated"]["goal_distance"]
    assert g["threshold_m"] == 0.01 and g["episodes"] == n
    # only the 5 cm push ends more than 1 cm closer (the settling noise and the 5 mm nudge would count by "any amount")
    assert g["closer_fraction"] == pytest.approx(1 / n)
    if report_object:  # the object moved beyond 1 cm in the push, the round trip and the slide
        assert g["moved_source"] == "object_position" and g["moved_fraction"] == pytest.approx(3 / n)
        moved = [e["object_max_displacement"] for e in report["per_episode"]]
        assert moved == pytest.approx([1e-11, 0.05, 0.05, 0.005, 0.03])
    else:  # the goal distance alone cannot see the slide around the goal
        assert g["moved_source"] == "goal_distance" and g["moved_fraction"] == pytest.approx(2 / n)
        assert all(e["object_max_displacement"] is None for e in report["per_episode"])
