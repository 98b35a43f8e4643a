"""``gr2-sim collect`` / ``synth`` and the observation adapter, with experts defined here.

Experts are passed by ``--expert <this module>:<function>``, so these tests do not depend on
``envs/experts.py``; Gymnasium's ``InvertedPendulum-v5`` stands in for any env without images.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium import spaces

from gr2_sim.cli import main
from gr2_sim.collect import run_episode
from gr2_sim.data import TEST_SEED_START, load_episodes
from gr2_sim.obs_adapter import ObsAdapter, resize_image

REACH = "GR2Sim/Reach-v0"
REPO = Path(__file__).resolve().parents[1]


class ReachTestExpert:
    """Moves the fingertip straight at the target cube's top, at ``speed`` times the full step."""

    def __init__(self, env, speed: float):
        self.env, self.speed = env.unwrapped, speed

    def reset(self) -> None:
        pass

    def select_action(self, obs) -> np.ndarray:
        delta = np.clip((self.env.goal_point() - self.env.tcp_pos) / 0.03, -self.speed, self.speed)
        return np.array([*delta, 0, 0, 0, -1], np.float32)


class RandomExpert:
    def __init__(self, env, seed):
        self.space = env.action_space
        self.space.seed(seed)

    def reset(self) -> None:
        pass

    def select_action(self, obs):
        return self.space.sample()


def reach_expert(env, noise=0.0, seed=None):
    return ReachTestExpert(env, speed=1.0)


def slow_reach_expert(env, noise=0.0, seed=None):
    return ReachTestExpert(env, speed=0.5)


def idle_expert(env, noise=0.0, seed=None):
    return ReachTestExpert(env, speed=0.0)


def random_expert(env, noise=0.0, seed=None):
    return RandomExpert(env, seed)


def expert(name: str) -> str:
    return f"{__name__}:{name}"


def collect(out, *extra: str, env: str = REACH, episodes: int = 3) -> list[str]:
    return ["collect", "--env", env, "--episodes", str(episodes), "--out", str(out), "--workers", "1", *extra]


def assert_same_episodes(a, b) -> None:
    assert a.demo_keys == b.demo_keys and a.instructions == b.instructions
    for name in ("images", "states", "actions", "rewards", "seeds", "episode_starts", "action_starts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ----------------------------------------------------------------------------- collect on Reach
def test_collect_reach_stores_n_plus_one_frames_per_n_actions(tmp_path):
    out = tmp_path / "reach.hdf5"
    assert main(collect(out, "--expert", expert("reach_expert"), "--seed", "7")) == 0
    data = load_episodes(out, split="all")
    assert data.num_episodes == 3 and data.successes.all() and list(data.seeds) == [7, 8, 9]
    assert all(text.split()[-1] == "cube" for text in data.instructions)
    assert data.images.shape[1:] == (64, 64, 3) and data.states.shape[1] == 8 and data.actions.shape[1] == 7
    np.testing.assert_array_equal(data.episode_ends - data.episode_starts, data.action_ends - data.action_starts + 1)
    assert main(collect(out, "--expert", expert("reach_expert"), "--seed", "7")) == 0  # already complete: no-op
    assert load_episodes(out, split="all").num_episodes == 3


def test_no_actions_stores_robot_video(tmp_path):
    out = tmp_path / "video.hdf5"
    assert main(collect(out, "--expert", expert("reach_expert"), "--no-actions", episodes=2)) == 0
    data = load_episodes(out, split="all")
    assert data.kind == "robot_video" and data.actions is None and data.num_episodes == 2


def test_time_limit_counts_as_failure_and_collect_gives_up(tmp_path, capsys):
    out = tmp_path / "idle.hdf5"
    args = collect(out, "--expert", expert("idle_expert"), "--max-attempts", "2", episodes=1)
    assert main(args) == 2
    assert "gave up after 2 attempts with 0 of 1" in capsys.readouterr().err
    with h5py.File(out) as f:
        assert f["data"].attrs["next_attempt"] == 2 and f["data"].attrs["total"] == 0
    assert main([*args, "--keep-failures", "--overwrite"]) == 0
    data = load_episodes(out, split="all")
    assert not data.successes.any() and data.episode_ends[0] == 51  # 50 steps (the time limit), 51 frames


class UnstableEnv(gym.Env):
    """Reports success on its first step, but also a MuJoCo instability."""

    observation_space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 3), np.uint8),
                                     "state": spaces.Box(-1, 1, (2,), np.float32)})
    action_space = spaces.Box(-1, 1, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {"instruction": "hold still"}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, True, {"is_success": True, "unstable": True}


def test_unstable_episode_is_a_failure():
    env = UnstableEnv()
    ep = run_episode(env, ObsAdapter(env, 8), random_expert(env, seed=0), seed=3)
    assert not ep.success and ep.instruction == "hold still" and ep.actions.shape == (1, 3)
    assert ep.images.shape == (2, 8, 8, 3) and ep.states.shape == (2, 2)


# ----------------------------------------------------------------------------- any Gymnasium env
def test_collect_on_env_without_images_renders_frames(tmp_path):
    out = tmp_path / "pendulum.hdf5"
    args = collect(out, "--expert", expert("random_expert"), "--keep-failures", "--image-size", "16",
                   "--env-kwargs", '{"width": 32, "height": 32}', env="InvertedPendulum-v5")
    with pytest.warns(UserWarning, match="no instruction"):
        assert main(args) == 0
    data = load_episodes(out, split="all")
    assert data.env_id == "InvertedPendulum-v5" and data.instructions == ["", "", ""]
    assert data.images.shape[1:] == (16, 16, 3) and data.images.max() > 0
    assert data.states.shape[1] == 4 and data.actions.shape[1] == 1  # from the env's spaces
    assert np.abs(data.actions).max() <= 3.0  # InvertedPendulum's action bound


def test_resize_image_averages_areas_and_repeats_pixels():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    small = resize_image(image, 2)
    assert small.shape == (2, 2, 3) and small.dtype == np.uint8
    assert small[0, 0, 0] == round(image[:2, :2, 0].mean())
    big = resize_image(image, 8)
    np.testing.assert_array_equal(big[::2, ::2], image)
    assert resize_image(np.zeros((30, 45, 4), np.uint8), 16).shape == (16, 16, 3)


# ----------------------------------------------------------------------------- bad input: exit code 2
@pytest.mark.parametrize("extra, message", [
    (["--env", "NoSuchEnv-v0"], "GR2Sim/Reach-v0"),
    (["--env-kwargs", '{"image_size": NaN}'], "NaN"),
    (["--env-kwargs", "[1, 2]"], "JSON object"),
    (["--env-kwargs", "{image_size: 64"], "JSON object"),
    (["--env-kwargs", '{"no_such_kwarg": 1}'], "no_such_kwarg"),
    (["--expert", "no_colon"], "module:function"),
    (["--expert", "no_such_module_xyz:f"], "cannot import"),
    (["--expert", "os:no_such_function"], "no function"),
    (["--seed", str(TEST_SEED_START - 5)], "evaluation seeds"),
    (["--noise", "nan"], "--noise"),
    (["--episodes", "0"], "--episodes"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, extra, message):
    out = tmp_path / "bad.hdf5"
    assert main([*collect(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_file_for_another_env_is_refused_without_overwrite(tmp_path, capsys):
    out = tmp_path / "d.hdf5"
    assert main(collect(out, "--expert", expert("reach_expert"), episodes=1)) == 0
    pendulum = collect(out, "--expert", expert("random_expert"), "--keep-failures", "--env-kwargs",
                       '{"width": 16, "height": 16}', env="InvertedPendulum-v5", episodes=1)
    assert main(pendulum) == 2
    assert "env_id is 'GR2Sim/Reach-v0' there" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="no instruction"):
        assert main([*pendulum, "--overwrite"]) == 0
    assert load_episodes(out, split="all").env_id == "InvertedPendulum-v5"


def test_broken_file_is_a_user_error(tmp_path, capsys):
    out = tmp_path / "d.hdf5"
    out.write_text("hello\n")
    assert main(collect(out, "--expert", expert("reach_expert"))) == 2
    assert str(out) in capsys.readouterr().err
    assert main(collect(out, "--expert", expert("reach_expert"), "--overwrite", episodes=1)) == 0


# ----------------------------------------------------------------------------- interruption and resume
def _wait_for_size(path: Path, size: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > size):
        assert proc.poll() is None, f"collect ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "collect wrote nothing"
        time.sleep(0.01)


def test_killed_collect_resumes_to_the_same_file_as_an_uninterrupted_run(tmp_path):
    n, out, ref = 20, tmp_path / "resumed.hdf5", tmp_path / "reference.hdf5"
    args = ["--env", REACH, "--episodes", str(n), "--expert", expert("slow_reach_expert"), "--seed", "100",
            "--commit-every", "0"]  # save after every episode, so the kills below land mid-commit too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    command = [sys.executable, "-m", "gr2_sim.cli", "collect", *args, "--out", str(out), "--workers", "2"]

    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_size(out, 120_000, proc)
    proc.send_signal(signal.SIGKILL)  # the parent only: its workers must notice and exit by themselves
    _, err = proc.communicate(timeout=30)  # returns once no worker holds the output pipes
    killed = load_episodes(out, split="all")  # readable as it was left
    assert 0 < killed.num_episodes < n, err.decode()[-2000:]

    command[-1] = "1"  # a serial run this time: starts faster
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_size(out, out.stat().st_size + 80_000, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()[-2000:]
    with h5py.File(out) as f:
        stopped = int(f["data"].attrs["total"])
        assert killed.num_episodes < stopped < n and "mask" in f  # closed cleanly: masks written

    assert main(["collect", *args, "--out", str(out), "--workers", "1"]) == 0
    assert main(["collect", *args, "--out", str(ref), "--workers", "1"]) == 0
    for split in ("train", "valid"):
        assert_same_episodes(load_episodes(out, split=split), load_episodes(ref, split=split))
    assert load_episodes(out, split="all").num_episodes == n


# ----------------------------------------------------------------------------- synth
def fake_make_clip(seed, frames, image_size, kind=None):
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, image_size, image_size, 3), dtype=np.uint8)
    return types.SimpleNamespace(frames=video, kind=kind or "bounce", meta={"seed": seed, "g": np.float64(9.8)})


def test_synth_writes_video_only_clips_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "envs.synthetic", types.SimpleNamespace(make_clip=fake_make_clip))
    out = tmp_path / "synth.hdf5"
    synth = ["synth", "--frames", "5", "--out", str(out), "--workers", "1", "--image-size", "8", "--seed", "3"]
    assert main([*synth, "--clips", "2"]) == 0
    assert main([*synth, "--clips", "4"]) == 0  # resumes: two more clips
    data = load_episodes(out, split="all")
    assert data.kind == "synthetic" and data.actions is None and data.states.shape == (20, 0)
    assert data.instructions == [""] * 4 and list(data.seeds) == [3, 4, 5, 6]
    np.testing.assert_array_equal(data.episode(3)["images"], fake_make_clip(6, 5, 8).frames)
    with h5py.File(out) as f:
        assert f["data/demo_0"].attrs["clip_kind"] == "bounce" and '"g": 9.8' in f["data/demo_0"].attrs["meta"]
    assert main([*synth, "--clips", "4", "--frames", "6"]) == 2  # a different clip length is another dataset


def test_synth_kinds_and_tools_choose_the_clip_mix(tmp_path, capsys):
    out = tmp_path / "tools.hdf5"
    synth = ["synth", "--frames", "3", "--workers", "1", "--image-size", "16", "--clips", "2"]
    assert main([*synth, "--kinds", "tool", "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert [f[f"data/demo_{i}"].attrs["clip_kind"] for i in range(2)] == ["tool", "tool"]
        assert json.loads(f["data"].attrs["env_kwargs"]) == {"frames": 3, "kinds": ["tool"]}
    assert main([*synth, "--clips", "3", "--out", str(out)]) == 2  # the default mix is another dataset
    assert main([*synth, "--kinds", "bounce", "hammer", "--out", str(tmp_path / "x.hdf5")]) == 2
    assert "'hammer'" in capsys.readouterr().err
    from gr2_sim.synth import synth_kinds

    assert synth_kinds(None, False) is None and synth_kinds(["bounce", "fall", "collide", "roll", "occlude"], False) is None
    assert synth_kinds(None, True) == ("bounce", "fall", "collide", "roll", "occlude", "tool")
    assert synth_kinds(["roll"], True) == ("roll", "tool") and synth_kinds(["tool"], True) == ("tool",)
