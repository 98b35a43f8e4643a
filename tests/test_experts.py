"""Scripted experts: the policy contract, and success on seeds far from the ones they were tuned on."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs

TASKS = ["Reach", "Push", "PickPlace", "Stack", "Rope", "ToolPull", "MultiTask"]


def run_episode(env, expert, seed, distances=None):
    obs, info = env.reset(seed=seed)
    start = info["goal_distance"]
    expert.reset()
    done = False
    while not done:
        action = expert.select_action(obs)
        assert action.shape == (7,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    if distances is not None:
        distances.append((start, info["goal_distance"]))
    return info["is_success"]


@pytest.mark.parametrize("task", TASKS)
def test_expert_succeeds_on_untuned_seeds(task):
    env = gym.make(f"GR2Sim/{task}-v0")
    expert = envs.make_expert(env)
    seeds = range(500_000, 500_004)
    distances = []
    assert all(run_episode(env, expert, s, distances) for s in seeds)
    # info["goal_distance"] measures progress: every solved episode ends much nearer its goal than it began
    assert all(end < min(0.03, start / 2) for start, end in distances), distances


@pytest.mark.parametrize("task", ["PickPlace", "Stack", "Rope", "ToolPull"])
def test_noisy_expert_still_succeeds_and_differs(task):
    env = gym.make(f"GR2Sim/{task}-v0")
    clean, noisy = envs.make_expert(env), envs.make_expert(env, noise=0.1, seed=1)
    obs, _ = env.reset(seed=7)
    assert not np.array_equal(clean.select_action(obs), noisy.select_action(obs))
    assert run_episode(env, noisy, 500_100)


def test_noise_must_be_non_negative():
    with pytest.raises(ValueError, match="-0.5"):
        envs.make_expert(gym.make("GR2Sim/Reach-v0"), noise=-0.5)


def test_no_expert_for_foreign_env():
    with pytest.raises(ValueError, match="no scripted expert"):
        envs.make_expert(gym.make("CartPole-v1"))


def test_push_expert_turns_at_most_a_quarter_turn_to_line_up():
    from envs.experts import wrap_angle

    env = gym.make("GR2Sim/Push-v0")
    env.reset(seed=3)
    expert = envs.make_expert(env)
    current = env.unwrapped.gripper_yaw
    for angle in np.linspace(-np.pi, np.pi, 37):
        direction = np.array([np.cos(angle), np.sin(angle)])
        yaw = expert.push_yaw(direction)
        assert abs(wrap_angle(yaw - current)) <= np.pi / 2 + 1e-9
        # the jaw's face is across the push direction: yaw - pi/2 is the direction, up to a half turn
        assert abs(np.sin(yaw - np.pi / 2 - angle)) < 1e-9
