"""gr2-sim's MuJoCo tabletop environments, scripted experts and synthetic physics video.

Importing this package registers the tasks with Gymnasium as ``GR2Sim/<Task>-v0``::

    import gymnasium as gym
    import envs
    env = gym.make("GR2Sim/PickPlace-v0", render_mode="rgb_array", image_size=64)
    expert = envs.make_expert(env)
"""

from __future__ import annotations

import gymnasium as gym

import envs.scene  # noqa: F401  (sets MUJOCO_GL=egl before mujoco is imported)

# task name -> (entry point, episode step limit at 10 Hz)
TASKS: dict[str, tuple[str, int]] = {
    "Reach": ("envs.reach:ReachEnv", 50),
    "Push": ("envs.push:PushEnv", 100),
    "PickPlace": ("envs.pick_place:PickPlaceEnv", 100),
    "Stack": ("envs.stack:StackEnv", 120),
    "Rope": ("envs.rope:RopeEnv", 120),
    "ToolPull": ("envs.tool_pull:ToolPullEnv", 120),
    "MultiTask": ("envs.multitask:MultiTaskEnv", 120),
}
ENV_IDS = tuple(f"GR2Sim/{name}-v0" for name in TASKS)

for _name, (_entry, _steps) in TASKS.items():
    if f"GR2Sim/{_name}-v0" not in gym.registry:
        gym.register(id=f"GR2Sim/{_name}-v0", entry_point=_entry, max_episode_steps=_steps)


def make_expert(env, noise: float = 0.0, seed: int | None = None):
    """Scripted expert for a gr2-sim env (wrapped or not): ``reset()`` and ``select_action(obs)``.

    ``noise`` adds Gaussian action noise of that standard deviation (for diverse demonstrations);
    ``seed`` seeds that noise.
    """
    from envs.experts import make_expert as _make

    return _make(env, noise=noise, seed=seed)


__all__ = ["ENV_IDS", "TASKS", "make_expert"]
