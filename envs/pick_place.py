"""PickPlace: pick up a cube and put it in a bowl."""

from __future__ import annotations

import numpy as np

from envs.base import TabletopEnv, check_flag
from envs.objects import BOWL_INNER, CUBE_HALF, bowl, bowl_mesh, cube

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
TEMPLATES = ("put the {c} cube in the {b} bowl", "place the {c} cube into the {b} bowl")


class PickPlaceEnv(TabletopEnv):
    """Put the named cube in the named bowl: success when the cube is inside the bowl's rim, low in it.

    Two cubes of distinct colors (one named, one distractor) and an open bowl of a third color.
    Instruction e.g. "put the red cube in the yellow bowl". ``distractor=False`` leaves the distractor cube
    out (the rest of the scene is the same for the same seed). See :mod:`envs.base` for the contract.
    """

    task_name = "PickPlace"

    def __init__(self, *args, distractor: bool = True, **kwargs):
        self.distractor = check_flag("distractor", distractor)
        super().__init__(*args, **kwargs)

    def task_xml(self) -> str:
        return bowl("bowl") + cube("cube") + (cube("distractor") if self.distractor else "")

    def task_assets(self) -> str:
        return bowl_mesh("bowl")

    def reset_task(self) -> None:
        c_cube, c_bowl, c_dist = (COLORS[i] for i in self.np_random.choice(len(COLORS), 3, replace=False))
        bowl_xy, cube_xy, dist_xy = self.sample_positions(3, 0.13, region=(0.16, 0.12))
        self.model.body_pos[self.model.body("bowl").id] = [*bowl_xy, 0.0]
        self.set_free_body("cube_joint", [*cube_xy, CUBE_HALF], self.np_random.uniform(-np.pi, np.pi))
        dist_yaw = self.np_random.uniform(-np.pi, np.pi)  # drawn either way: the rest of the scene stays the same
        if self.distractor:
            self.set_free_body("distractor_joint", [*dist_xy, CUBE_HALF], dist_yaw)
        self.set_geom_color("cube", c_cube)
        if self.distractor:
            self.set_geom_color("distractor", c_dist)
        for g in range(self.model.ngeom):
            if (self.model.geom(g).name or "").startswith("bowl"):
                self.set_geom_color(self.model.geom(g).name, c_bowl)
        self.instruction = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))].format(c=c_cube, b=c_bowl)

    def task_points(self) -> np.ndarray:
        """The named cube's centre, and the named bowl's centre."""
        return np.stack([self.body_pos("cube"), self.body_pos("bowl")])

    def goal_distance(self) -> float:
        """Horizontal distance from the cube's centre to the bowl's (success: inside the bowl, resting low)."""
        return float(np.linalg.norm(self.body_pos("cube")[:2] - self.body_pos("bowl")[:2]))

    def is_success(self) -> bool:
        cube_pos, bowl_pos = self.body_pos("cube"), self.body_pos("bowl")
        inside = np.linalg.norm(cube_pos[:2] - bowl_pos[:2]) < BOWL_INNER
        return bool(inside and cube_pos[2] < 0.03 + CUBE_HALF)
