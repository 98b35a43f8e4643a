"""Any Gymnasium env, for real: a stand-in third-party package, written here, registers its env when imported
and reports success as ``info["success"] = 1.0`` (as several benchmark suites do), with an expert factory
``f(env)`` that takes no noise or seed. Collect keeps its successful episodes; train and eval run on them."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from gr2_sim.cli import main
from gr2_sim.collect import call_factory, factory_kwargs
from gr2_sim.data import load_episodes
from gr2_sim.errors import UserError
from gr2_sim.obs_adapter import check_env_id, read_success, split_env_id

PACKAGE = "gr2sim_standin_suite"
ENV = "StandInSuite/Touch-v0"

SOURCE = '''
"""A point that the action moves on a plane; success when it touches the goal. Registers on import."""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TouchEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None, size=64):
        self.render_mode, self.size = render_mode, size
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (size, size, 3), np.uint8),
            "state": spaces.Box(-1.0, 1.0, (4,), np.float32)})
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def _obs(self):
        image = np.zeros((self.size, self.size, 3), np.uint8)
        for xy, channel in ((self.pos, 0), (self.goal, 1)):
            i, j = ((xy + 1) / 2 * (self.size - 4)).astype(int)
            image[i:i + 4, j:j + 4, channel] = 255
        return {"image": image, "state": np.concatenate([self.pos, self.goal]).astype(np.float32)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        angle = self.np_random.uniform(0, 2 * np.pi)
        self.goal = np.clip(self.pos + 0.6 * np.array([np.cos(angle), np.sin(angle)]), -0.9, 0.9)
        return self._obs(), {"success": 0.0}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), -1, 1)
        touched = float(np.linalg.norm(self.pos - self.goal) < 0.08)
        return self._obs(), touched, bool(touched), False, {"success": touched}


class Expert:
    def __init__(self, env):
        self.env = env.unwrapped

    def reset(self):
        pass

    def select_action(self, obs):
        return np.clip((self.env.goal - self.env.pos) / 0.1, -1, 1).astype(np.float32)


def make_expert(env):
    return Expert(env)


gym.register("StandInSuite/Touch-v0", entry_point=TouchEnv, max_episode_steps=24)
'''


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The stand-in package on sys.path (imported only by the code under test)."""
    root = tmp_path_factory.mktemp("site")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop(PACKAGE, None)


def test_collect_train_eval_on_an_env_a_package_registers_on_import(suite, tmp_path, capsys):
    data, run, ev = tmp_path / "touch.hdf5", tmp_path / "run", tmp_path / "eval"
    expert = f"{PACKAGE}:make_expert"  # f(env): no noise, no seed
    with pytest.warns(UserWarning, match="no instruction"):
        assert main(["collect", "--env", f"{PACKAGE}:{ENV}", "--episodes", "6", "--out", str(data), "--workers", "1",
                     "--expert", expert, "--image-size", "32", "--env-kwargs", '{"size": 80}']) == 0
    episodes = load_episodes(data, split="all")
    assert episodes.num_episodes == 6 and episodes.env_id == f"{PACKAGE}:{ENV}"
    assert episodes.actions.shape[1] == 2 and episodes.states.shape[1] == 4
    assert main(["train", "--stage", "action", "--data", str(data), "--out", str(run), "--preset", "tiny",
                 "--steps", "3", "--batch-size", "4", "--eval-every", "3", "--ckpt-every", "3", "--no-progress"]) == 0
    with pytest.warns(UserWarning, match="no instruction"):
        assert main(["eval", "--ckpt", str(run), "--env", ENV, "--import", PACKAGE, "--episodes", "2",
                     "--out", str(ev), "--no-progress"]) == 0
    report = json.loads((ev / "eval.json").read_text())
    assert report["config"]["success_key"] == "success" and report["aggregated"]["episodes"] == 2
    assert report["config"]["env_kwargs"] == {"size": 80}  # the data's, though the id is given without "module:"
    with pytest.warns(UserWarning, match="no instruction"):  # the expert itself, through the same success rule
        assert main(["eval", "--policy", "expert", "--expert", expert, "--env", f"{PACKAGE}:{ENV}", "--episodes", "3",
                     "--out", str(tmp_path / "expert"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "expert" / "eval.json").read_text())
    assert report["aggregated"]["success_rate"] == 1.0 and report["config"]["success_key"] == "success"
    assert report["config"]["policy"]["expert"] == expert
    capsys.readouterr()
    assert main(["eval", "--policy", "random", "--expert", expert, "--env", ENV, "--import", PACKAGE, "--episodes", "1",
                 "--out", str(tmp_path / "random")]) == 2
    assert "--expert is only read by --policy expert" in capsys.readouterr().err


def test_a_named_success_key_that_the_env_never_reports_fails_collection_with_a_hint(suite, tmp_path, capsys):
    out = tmp_path / "d.hdf5"
    with pytest.warns(UserWarning):
        code = main(["collect", "--env", ENV, "--import", PACKAGE, "--episodes", "1", "--max-attempts", "2",
                     "--out", str(out), "--workers", "1", "--expert", f"{PACKAGE}:make_expert",
                     "--image-size", "32", "--success-key", "solved"])
    assert code == 2
    err = capsys.readouterr().err
    assert "gave up" in err and "info['solved']" in err


@pytest.mark.parametrize("argv, message", [
    (["--env", "StandInSuite/NoSuch-v0", "--import", PACKAGE], "unknown env id 'StandInSuite/NoSuch-v0'"),
    (["--env", "gr2sim_no_such_module_xyz:Some/Env-v0"], "cannot import"),
    (["--env", ENV, "--import", "gr2sim_no_such_module_xyz"], "--import 'gr2sim_no_such_module_xyz'"),
    (["--env", ":Some/Env-v0"], "module:ns/Id-v0"),
])
def test_unknown_ids_and_modules_are_one_clear_line(suite, tmp_path, capsys, argv, message):
    out = tmp_path / "bad.hdf5"
    assert main(["collect", *argv, "--episodes", "1", "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_an_id_that_needs_its_package_says_how_to_import_it(capsys):
    with pytest.raises(UserError, match="--import module"):
        check_env_id("GR2SimNeverRegistered/Task-v0")
    assert split_env_id("pkg.sub:ns/Id-v1") == ("pkg.sub", "ns/Id-v1") and split_env_id("Id-v1") == (None, "Id-v1")


def test_success_is_is_success_else_success_else_the_named_key():
    assert read_success({"is_success": True, "success": 0.0}) == (True, "is_success")
    assert read_success({"is_success": False, "success": 1.0}) == (False, "is_success")
    assert read_success({"success": 1.0}) == (True, "success")
    assert read_success({"success": 0.0}) == (False, "success")
    assert read_success({"success": -1.0}) == (False, "success")
    assert read_success({"reward": 1.0}) == (False, None)
    assert read_success({"solved": 1, "is_success": False}, "solved") == (True, "solved")
    assert read_success({"is_success": True}, "solved") == (False, None)


def test_an_expert_factory_gets_only_the_keywords_it_accepts():
    def plain(env):
        return ("plain", env)

    def seeded(env, seed=None):
        return ("seeded", seed)

    def full(env, noise=0.0, seed=None):
        return ("full", noise, seed)

    def anything(env, **kwargs):
        return ("anything", kwargs)

    assert call_factory(plain, "E", 0.1, 7) == ("plain", "E")
    assert call_factory(seeded, "E", 0.1, 7) == ("seeded", 7)
    assert call_factory(full, "E", 0.1, 7) == ("full", 0.1, 7)
    assert call_factory(anything, "E", 0.1, 7) == ("anything", {"noise": 0.1, "seed": 7})
    assert factory_kwargs(plain, 0.1, 7) == {}


def test_sweep_passes_the_import_expert_and_success_key_on(suite, tmp_path, capsys):
    out = tmp_path / "sweep"
    noise = pytest.warns(UserWarning, match="--noise 0.05 is not applied")  # the sweep's demos ask for noise
    with pytest.warns(UserWarning, match="no instruction"), noise:
        assert main(["sweep", "--env", ENV, "--import", PACKAGE, "--expert", f"{PACKAGE}:make_expert",
                     "--success-key", "success", "--env-kwargs", '{"size": 80}', "--demos", "2", "--pretrain", "no",
                     "--out", str(out), "--steps", "2", "--episodes", "1", "--videos", "0", "--preset", "tiny",
                     "--batch-size", "2", "--workers", "1"]) == 0
    eval_json = json.loads((out / "runs" / "scratch_N2_s0" / "eval" / "eval.json").read_text())
    assert eval_json["config"]["success_key"] == "success" and eval_json["config"]["env_kwargs"] == {"size": 80}
    capsys.readouterr()
