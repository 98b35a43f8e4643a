"""Stack: put one cube on top of another and let go."""

from __future__ import annotations

import numpy as np

from envs.base import TabletopEnv
from envs.objects import CUBE_HALF, cube

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
TEMPLATES = ("stack the {a} cube on the {b} cube", "put the {a} cube on top of the {b} cube")


class StackEnv(TabletopEnv):
    """Stack the named cube on the other named cube: success when it rests on it and the gripper is open.

    Three cubes of distinct colors; the instruction names two, e.g. "stack the green cube on the blue
    cube". Success: top cube centred within 2 cm of the bottom cube in xy, one cube height above it
    (+-1 cm), and the gripper at least half open. See :mod:`envs.base` for the contract.
    """

    task_name = "Stack"

    def task_xml(self) -> str:
        return "".join(cube(f"cube{i}") for i in range(3))

    def reset_task(self) -> None:
        colors = [COLORS[i] for i in self.np_random.choice(len(COLORS), 3, replace=False)]
        for i, xy in enumerate(self.sample_positions(3, 0.10, region=(0.16, 0.12))):
            self.set_free_body(f"cube{i}_joint", [*xy, CUBE_HALF], self.np_random.uniform(-np.pi, np.pi))
            self.set_geom_color(f"cube{i}", colors[i])
        top, bottom = self.np_random.choice(3, 2, replace=False)
        self.top, self.bottom = f"cube{top}", f"cube{bottom}"
        self.instruction = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))].format(
            a=colors[top], b=colors[bottom])

    def task_points(self) -> np.ndarray:
        """The top cube's centre, and where it rests centred on the bottom cube."""
        return np.stack([self.body_pos(self.top), self.body_pos(self.bottom) + np.array([0.0, 0.0, 2 * CUBE_HALF])])

    def goal_distance(self) -> float:
        """Top cube's centre to where it rests centred on the bottom cube."""
        goal = self.body_pos(self.bottom) + np.array([0.0, 0.0, 2 * CUBE_HALF])
        return float(np.linalg.norm(self.body_pos(self.top) - goal))

    def is_success(self) -> bool:
        top, bottom = self.body_pos(self.top), self.body_pos(self.bottom)
        centred = np.linalg.norm(top[:2] - bottom[:2]) < 0.02
        on_top = abs(top[2] - bottom[2] - 2 * CUBE_HALF) < 0.01
        return bool(centred and on_top and self.gripper_opening > 0.5)
