"""Rope: drag a deformable cable to an edge of the table."""

from __future__ import annotations

import numpy as np
from envs.base import TabletopEnv, euler_to_quat

N_SEGMENTS = 10
SEG_LEN = 0.024  # metres per capsule segment
RADIUS = 0.008
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
# edge name -> (axis, sign, goal coordinate for the grasped middle, success threshold on the centroid)
EDGES = {
    "left": (0, -1, -0.20, -0.14),
    "right": (0, 1, 0.20, 0.14),
    "back": (1, 1, 0.15, 0.09),
    "front": (1, -1, -0.15, -0.09),
}
TEMPLATES = ("drag the {c} rope to the {e} edge", "move the {c} rope to the {e} side of the table")


def rope_xml() -> str:
    """A chain of capsules joined by damped ball joints; the first segment carries the free joint."""
    xml = ""
    for i in reversed(range(N_SEGMENTS)):
        joint = '<freejoint name="rope_joint"/>' if i == 0 else (
            f'<joint name="rope_ball{i}" type="ball" pos="{-SEG_LEN / 2} 0 0" damping="0.004" armature="0.0005"/>')
        pos = "0 0 0" if i == 0 else f"{SEG_LEN} 0 0"
        xml = (f'<body name="rope{i}" pos="{pos}">{joint}'
               f'<geom name="rope{i}" type="capsule" fromto="{-SEG_LEN / 2} 0 0 {SEG_LEN / 2} 0 0" size="{RADIUS}" mass="0.03" '
               f'rgba="1 1 1 1" friction="1.0 0.01 0.001" condim="4" contype="2" conaffinity="1"/>{xml}</body>')
    return xml


class RopeEnv(TabletopEnv):
    """Drag the rope to the named table edge: success when the rope's centroid is within 6 cm of it.

    A 24 cm cable of 10 capsules linked by damped ball joints, laid with a random position, heading and
    gentle bends; the instruction names its color and an edge (left, right, back = far from the camera,
    front = near it), e.g. "drag the red rope to the left edge". See :mod:`envs.base` for the contract.
    """

    task_name = "Rope"

    def task_xml(self) -> str:
        return rope_xml()

    def reset_task(self) -> None:
        color = COLORS[int(self.np_random.integers(len(COLORS)))]
        for i in range(N_SEGMENTS):
            self.set_geom_color(f"rope{i}", color)
        yaw = self.np_random.uniform(-np.pi, np.pi)
        centre = self.np_random.uniform([-0.08, -0.06], [0.08, 0.06])
        start = centre - 0.5 * (N_SEGMENTS - 1) * SEG_LEN * np.array([np.cos(yaw), np.sin(yaw)])
        self.set_free_body("rope_joint", [*start, RADIUS], yaw)
        for i in range(1, N_SEGMENTS):
            qadr = self.model.jnt_qposadr[self.model.joint(f"rope_ball{i}").id]
            self.data.qpos[qadr:qadr + 4] = euler_to_quat(0.0, 0.0, self.np_random.uniform(-0.25, 0.25))
        self.edge = str(self.np_random.choice(list(EDGES)))
        axis, _, goal, _ = EDGES[self.edge]
        self._goal = np.array(centre, dtype=float)
        self._goal[axis] = goal
        self.instruction = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))].format(c=color, e=self.edge)

    def centroid(self) -> np.ndarray:
        return np.mean([self.data.body(f"rope{i}").xpos for i in range(N_SEGMENTS)], axis=0)

    def goal_xy(self) -> np.ndarray:
        """Where the expert carries the rope's middle to."""
        return self._goal.copy()

    def grasp_segment(self) -> str:
        return f"rope{N_SEGMENTS // 2}"

    def is_success(self) -> bool:
        axis, sign, _, threshold = EDGES[self.edge]
        return bool(sign * (self.centroid()[axis] - threshold) > 0)
