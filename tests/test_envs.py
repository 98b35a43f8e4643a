"""The Gymnasium contract of every registered env: check_env, determinism, spaces, bad input, faults."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

TASK_IDS = [i for i in envs.ENV_IDS]


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_same_seed_same_episode_bit_for_bit(env_id):
    def rollout(seed):
        env = gym.make(env_id)
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        frames, states, instr = [obs["image"]], [obs["state"]], info["instruction"]
        for _ in range(5):
            obs, *_ = env.step(rng.uniform(-1, 1, 7))
            frames.append(obs["image"])
            states.append(obs["state"])
        env.close()
        return np.stack(frames), np.stack(states), instr

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_observation_info_and_instruction(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert isinstance(info["instruction"], str) and len(info["instruction"]) > 5
    assert info["instruction"] == env.unwrapped.instruction
    assert isinstance(info["is_success"], bool)
    assert isinstance(info["goal_distance"], float) and 0.03 < info["goal_distance"] < 1.0  # not solved at reset
    np.testing.assert_array_equal(info["object_position"], env.unwrapped.task_points()[0])  # the named object
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert isinstance(info["is_success"], bool) and info["instruction"] == env.unwrapped.instruction
    assert obs["image"].std() > 5  # a real picture, not a blank frame


def test_image_size_and_render_size():
    env = gym.make("GR2Sim/Reach-v0", image_size=32, render_mode="rgb_array", render_size=96)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8


def test_render_mode_human_refused():
    from envs.reach import ReachEnv

    assert "human" not in ReachEnv.metadata["render_modes"]  # check_env aborts on it on a headless box
    with pytest.raises(ValueError, match="render_mode"):
        ReachEnv(render_mode="human")


def test_nan_and_inf_actions_raise():
    env = gym.make("GR2Sim/Reach-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        env.step(np.array([0, np.inf, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="7 values"):
        env.step(np.zeros(3))


def test_out_of_range_actions_are_clipped():
    def state_after(action):
        env = gym.make("GR2Sim/Reach-v0")
        env.reset(seed=1)
        obs, *_ = env.step(action)
        return obs["state"]

    big = np.array([5.0, -7.0, 3.0, 0, 0, 9.0, 4.0])
    np.testing.assert_array_equal(state_after(big), state_after(np.clip(big, -1, 1)))


def test_unstable_simulation_truncates_with_warning():
    env = gym.make("GR2Sim/Push-v0")
    obs, _ = env.reset(seed=0)
    env.unwrapped.data.qvel[:] = np.nan
    with pytest.warns(RuntimeWarning, match="unstable"):
        obs2, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert truncated and not terminated and info["unstable"]
    assert np.all(np.isfinite(obs2["state"]))


def test_multitask_samples_every_task():
    env = gym.make("GR2Sim/MultiTask-v0")
    seen = set()
    for seed in range(30):
        env.reset(seed=seed)
        seen.add(env.unwrapped.current_task)
    assert seen == set(env.unwrapped.tasks)


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_time_limit_set_at_registration(env_id):
    assert gym.spec(env_id).max_episode_steps is not None


def test_control_at_10_hz_and_synthetic_video_keeps_its_timestep():
    from envs import base, scene, synthetic

    assert base.SUBSTEPS * scene.PHYSICS_TIMESTEP == pytest.approx(1 / scene.CONTROL_HZ)
    assert synthetic.TIMESTEP == 0.004  # its bouncy contacts are tuned at 4 ms
    assert synthetic.SUBSTEPS * synthetic.TIMESTEP == pytest.approx(1 / scene.CONTROL_HZ)


def test_bowl_is_drawn_as_one_mesh_and_collides_as_primitives():
    model = gym.make("GR2Sim/PickPlace-v0").unwrapped.model
    bowl = [i for i in range(model.ngeom) if model.geom(i).name.startswith("bowl")]
    drawn = [i for i in bowl if model.geom_group[i] < 3]  # MjvOption draws groups 0-2
    assert [model.geom(i).name for i in drawn] == ["bowl_visual"]
    assert model.geom_contype[drawn[0]] == 0 and model.geom_conaffinity[drawn[0]] == 0
    assert len(bowl) == 8 and all(model.geom_contype[i] == 1 for i in bowl if i not in drawn)


def test_frames_are_fresh_arrays():
    env = gym.make("GR2Sim/Reach-v0")
    first, _ = env.reset(seed=0)
    kept = first["image"].copy()
    second, *_ = env.step(np.ones(7))
    assert not np.shares_memory(first["image"], second["image"])
    np.testing.assert_array_equal(first["image"], kept)  # the renderer reuses its buffer, never our frames


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_object_state_appends_the_named_object_and_its_goal(env_id):
    plain, full = gym.make(env_id), gym.make(env_id, object_state=True)
    check_env(full.unwrapped, skip_render_check=True)
    assert full.observation_space["state"].shape == (14,)
    rng = np.random.default_rng(0)
    (a, _), (b, info) = plain.reset(seed=5), full.reset(seed=5)
    for _ in range(3):  # the same episode, the plain state first, then the two task points
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["state"], b["state"][:8])
        assert np.allclose(b["state"][8:].reshape(2, 3), full.unwrapped.task_points(), atol=1e-6)
        action = rng.uniform(-1, 1, 7)
        (a, *_), (b, _, _, _, info) = plain.step(action), full.step(action)
    obj, goal = b["state"][8:11], b["state"][11:14]
    task = full.unwrapped.task_name if env_id != "GR2Sim/MultiTask-v0" else full.unwrapped.current_task
    if task in ("Push", "PickPlace"):  # goal distance is measured between the two points
        assert info["goal_distance"] == pytest.approx(np.linalg.norm(obj[:2] - goal[:2]), abs=1e-5)
    elif task == "Stack":
        assert info["goal_distance"] == pytest.approx(np.linalg.norm(obj - goal), abs=1e-5)
    elif task == "Reach":
        assert info["goal_distance"] == pytest.approx(np.linalg.norm(b["state"][:3] - goal), abs=1e-5)


def test_object_state_follows_the_pushed_cube_to_the_target():
    env = gym.make("GR2Sim/Push-v0", object_state=True)
    expert = envs.make_expert(env)
    obs, _ = env.reset(seed=500_001)
    start = obs["state"][8:14].copy()
    done, info = False, {}
    while not done:
        obs, _, terminated, truncated, info = env.step(expert.select_action(obs))
        done = terminated or truncated
    assert info["is_success"]
    cube, target = obs["state"][8:11], obs["state"][11:14]
    assert np.linalg.norm(cube[:2] - target[:2]) < 0.03 < np.linalg.norm(start[:2] - start[3:5])
    assert np.allclose(target, start[3:6], atol=1e-6)  # the pad does not move


def test_object_state_rejects_a_non_boolean():
    with pytest.raises(ValueError, match="object_state must be true or false, got 'yes'"):
        gym.make("GR2Sim/Push-v0", object_state="yes")


@pytest.mark.parametrize("task", ["Push", "PickPlace"])
def test_without_distractor_the_same_scene_lacks_only_the_distractor(task):
    with_d, without = gym.make(f"GR2Sim/{task}-v0", object_state=True), gym.make(f"GR2Sim/{task}-v0", distractor=False,
                                                                              object_state=True)
    check_env(without.unwrapped, skip_render_check=True)
    (a, ia), (b, ib) = with_d.reset(seed=11), without.reset(seed=11)
    assert ia["instruction"] == ib["instruction"] and np.allclose(a["state"], b["state"])  # gripper, cube, goal
    assert not np.array_equal(a["image"], b["image"])  # the distractor is out of the picture
    names = {without.unwrapped.model.body(i).name for i in range(without.unwrapped.model.nbody)}
    assert "distractor" not in names and "cube" in names
    expert = envs.make_expert(without)
    obs, done, info = b, False, ib
    while not done:
        obs, _, terminated, truncated, info = without.step(expert.select_action(obs))
        done = terminated or truncated
    assert info["is_success"]
    with pytest.raises(ValueError, match="distractor must be true or false, got 0"):
        gym.make(f"GR2Sim/{task}-v0", distractor=0)
