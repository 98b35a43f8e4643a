"""Reach: touch the cube of the named color among distractors."""

from __future__ import annotations

import numpy as np

from envs.base import TabletopEnv
from envs.objects import CUBE_HALF, cube

N_CUBES = 3
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
TEMPLATES = ("touch the {c} cube", "reach the {c} cube", "move the gripper to the {c} cube")


class ReachEnv(TabletopEnv):
    """Touch the named cube: success when the fingertip centre is within 3 cm of its top centre.

    Three cubes of distinct random colors at random positions; the instruction names one of them
    (e.g. "touch the red cube"). See :mod:`envs.base` for the action, observation and episode contract.
    """

    task_name = "Reach"
    SUCCESS_DIST = 0.03

    def task_xml(self) -> str:
        return "".join(cube(f"cube{i}") for i in range(N_CUBES))

    def reset_task(self) -> None:
        colors = self.np_random.choice(len(COLORS), size=N_CUBES, replace=False)
        for i, (xy, c) in enumerate(zip(self.sample_positions(N_CUBES, 0.08), colors, strict=False)):
            self.set_free_body(f"cube{i}_joint", [xy[0], xy[1], CUBE_HALF], self.np_random.uniform(-np.pi, np.pi))
            self.set_geom_color(f"cube{i}", COLORS[c])
        self.target = f"cube{int(self.np_random.integers(N_CUBES))}"
        color = COLORS[colors[int(self.target[-1])]]
        self.instruction = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))].format(c=color)

    def goal_point(self) -> np.ndarray:
        return self.body_pos(self.target) + np.array([0.0, 0.0, CUBE_HALF])

    def task_points(self) -> np.ndarray:
        """The named cube's centre, and its top centre where the fingertips must be."""
        return np.stack([self.body_pos(self.target), self.goal_point()])

    def goal_distance(self) -> float:
        """Fingertip centre to the named cube's top centre (success under 3 cm)."""
        return float(np.linalg.norm(self.tcp_pos - self.goal_point()))

    def is_success(self) -> bool:
        return bool(np.linalg.norm(self.tcp_pos - self.goal_point()) < self.SUCCESS_DIST)
