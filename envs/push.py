"""Push: push a cube onto a colored target pad on the table."""

from __future__ import annotations

import numpy as np

from envs.base import TabletopEnv, check_flag
from envs.objects import CUBE_HALF, cube, target_pad

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
TEMPLATES = ("push the {c} cube onto the {t} target", "slide the {c} cube to the {t} target")


class PushEnv(TabletopEnv):
    """Push the named cube onto the named target pad: success when its centre is within 3 cm of the pad's.

    One cube, one flat target pad (objects can slide over it) of another color, and one distractor cube;
    positions at least 12 cm apart. Instruction e.g. "push the blue cube onto the green target".
    ``distractor=False`` leaves the distractor out (the rest of the scene is the same for the same seed):
    the instruction is then not needed to tell which cube, a diagnostic of language grounding.
    See :mod:`envs.base` for the action, observation and episode contract.
    """

    task_name = "Push"
    SUCCESS_DIST = 0.03

    def __init__(self, *args, distractor: bool = True, **kwargs):
        self.distractor = check_flag("distractor", distractor)
        super().__init__(*args, **kwargs)

    def task_xml(self) -> str:
        return target_pad("target") + cube("cube") + (cube("distractor") if self.distractor else "")

    def reset_task(self) -> None:
        c_cube, c_target, c_dist = (COLORS[i] for i in self.np_random.choice(len(COLORS), 3, replace=False))
        cube_xy, target_xy, dist_xy = self.sample_positions(3, 0.12, region=(0.15, 0.11))
        self.set_free_body("cube_joint", [*cube_xy, CUBE_HALF], self.np_random.uniform(-np.pi, np.pi))
        dist_yaw = self.np_random.uniform(-np.pi, np.pi)  # drawn either way: the rest of the scene stays the same
        if self.distractor:
            self.set_free_body("distractor_joint", [*dist_xy, CUBE_HALF], dist_yaw)
        self.model.body_pos[self.model.body("target").id] = [*target_xy, 0.0]
        self.set_geom_color("cube", c_cube)
        if self.distractor:
            self.set_geom_color("distractor", c_dist)
        self.set_geom_color("target", c_target)
        self.instruction = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))].format(c=c_cube, t=c_target)

    def task_points(self) -> np.ndarray:
        """The named cube's centre, and the target pad's centre at the cube's resting height."""
        return np.stack([self.body_pos("cube"), self.body_pos("target") + np.array([0.0, 0.0, CUBE_HALF])])

    def goal_distance(self) -> float:
        """Horizontal distance from the cube's centre to the target pad's (success under 3 cm)."""
        return float(np.linalg.norm(self.body_pos("cube")[:2] - self.body_pos("target")[:2]))

    def is_success(self) -> bool:
        return bool(np.linalg.norm(self.body_pos("cube")[:2] - self.body_pos("target")[:2]) < self.SUCCESS_DIST)
