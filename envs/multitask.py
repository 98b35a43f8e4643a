"""MultiTask: each episode is one of the tasks (by default the first five), sampled uniformly."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.pick_place import PickPlaceEnv
from envs.push import PushEnv
from envs.reach import ReachEnv
from envs.rope import RopeEnv
from envs.stack import StackEnv
from envs.tool_pull import ToolPullEnv

TASK_CLASSES = {cls.task_name: cls for cls in (ReachEnv, PushEnv, PickPlaceEnv, StackEnv, RopeEnv, ToolPullEnv)}
# The default mix: ToolPull joins only when named (``tasks=(..., "ToolPull")``), so a seed draws the same task
# as before it existed and MultiTask data collected earlier stays reproducible.
DEFAULT_TASKS = ("Reach", "Push", "PickPlace", "Stack", "Rope")


class MultiTaskEnv(gym.Env):
    """Samples one task per episode (uniformly, from the env's seed) and behaves exactly as that task.

    ``tasks`` names the mix (default ``DEFAULT_TASKS``; any of ``TASK_CLASSES``, ToolPull included).

    All tasks share the action and observation spaces of :mod:`envs.base`, so a policy sees one
    interface; the instruction says which task this episode is. ``current_task`` names it.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    task_name = "MultiTask"

    def __init__(self, image_size: int = 64, render_mode: str | None = None, render_size: int = 256,
                 tasks: tuple[str, ...] | None = None, object_state: bool = False):
        names = tuple(tasks) if tasks is not None else DEFAULT_TASKS
        unknown = [n for n in names if n not in TASK_CLASSES]
        if unknown or not names:
            raise ValueError(f"unknown tasks {unknown or names!r}; choose from {', '.join(TASK_CLASSES)}")
        self.tasks = {n: TASK_CLASSES[n](image_size=image_size, render_mode=render_mode,
                                         render_size=render_size, object_state=object_state) for n in names}
        first = next(iter(self.tasks.values()))
        self.action_space = first.action_space
        self.observation_space = first.observation_space
        self.render_mode = render_mode
        self.current_task = names[0]

    @property
    def env(self):
        return self.tasks[self.current_task]

    @property
    def instruction(self) -> str:
        return self.env.instruction

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        names = list(self.tasks)
        self.current_task = names[int(self.np_random.integers(len(names)))]
        return self.env.reset(seed=int(self.np_random.integers(2**31 - 1)), options=options)

    def step(self, action):
        return self.env.step(action)

    def render(self):
        return self.env.render()

    def is_success(self) -> bool:
        return self.env.is_success()

    def goal_distance(self) -> float:
        return self.env.goal_distance()

    def task_points(self):
        return self.env.task_points()

    def close(self):
        for env in self.tasks.values():
            env.close()


__all__ = ["DEFAULT_TASKS", "MultiTaskEnv", "TASK_CLASSES"]
