"""Rope: drag a deformable cable to an edge of the table."""

from __future__ import annotations

import mujoco
import numpy as np

from envs.base import TabletopEnv

N_SEGMENTS = 8
SEG_LEN = 0.026  # metres between neighbouring joints (the rope is N_SEGMENTS * SEG_LEN + 2 * RADIUS long)
RADIUS = 0.013  # metres: the rope is 2.6 cm thick
SEG_MASS = 0.02  # kg per segment
BEND_STIFFNESS = 0.004  # N m / rad per hinge, toward straight
BEND_DAMPING = 0.002  # N m s / rad per hinge
ARMATURE = 1e-4  # kg m^2 per hinge: keeps the light segments' dynamics well conditioned at the physics timestep
JOINT_RANGE = 1.2  # radians per hinge
START_BEND = 0.3  # radians: each in-plane joint angle of the start pose is uniform in +-START_BEND
CENTRE_REGION = (0.08, 0.06)  # the start centroid is uniform in |x| <= 0.08, |y| <= 0.06 (m)
MAX_HEIGHT = 0.035  # metres: success needs the centroid this low (on the table, not held up in the air)
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
# edge name -> (axis, sign, goal coordinate for the expert's grasp, success threshold on the centroid)
EDGES = {
    "left": (0, -1, -0.23, -0.14),
    "right": (0, 1, 0.23, 0.14),
    "back": (1, 1, 0.18, 0.09),
    "front": (1, -1, -0.18, -0.09),
}
TEMPLATES = ("drag the {c} rope to the {e} edge", "move the {c} rope to the {e} side of the table")


def rope_xml() -> str:
    """The rope's MJCF: ``N_SEGMENTS`` bodies ``rope0`` ... in order along the rope, joined by hinge pairs.

    The middle segment carries the free joint (``rope_joint``) and the two halves hang off it as chains
    (a shallow, symmetric kinematic tree). Every other segment
    bends relative to its neighbour nearer the middle about the vertical (``rope_yaw<i>``, in the table
    plane) and about its horizontal cross axis (``rope_pitch<i>``, out of it), each hinge springy and
    damped. A segment is drawn as a capsule that overlaps its neighbours, so the rope looks continuous;
    it collides as a hidden sphere (geom group 3, ``rope<i>_collision``) that touches its neighbours. The
    rope does not collide with itself (contype 2, conaffinity 1).
    """
    root = N_SEGMENTS // 2

    def segment(i: int, children: str = "") -> str:
        side = 1 if i > root else -1  # where the segment sits relative to its parent
        if i == root:
            pos, joint = "0 0 0", '<freejoint name="rope_joint"/>'
        else:
            attrs = (f'pos="{-side * SEG_LEN / 2} 0 0" stiffness="{BEND_STIFFNESS}" damping="{BEND_DAMPING}" '
                     f'armature="{ARMATURE}" range="-{JOINT_RANGE} {JOINT_RANGE}"')
            pos = f"{side * SEG_LEN} 0 0"
            joint = (f'<joint name="rope_yaw{i}" type="hinge" axis="0 0 1" {attrs}/>'
                     f'<joint name="rope_pitch{i}" type="hinge" axis="0 1 0" {attrs}/>')
        return (f'<body name="rope{i}" pos="{pos}">{joint}'
                f'<geom name="rope{i}" type="capsule" fromto="{-SEG_LEN / 2} 0 0 {SEG_LEN / 2} 0 0" size="{RADIUS}" '
                f'mass="{SEG_MASS}" rgba="1 1 1 1" contype="0" conaffinity="0"/>'
                f'<geom name="rope{i}_collision" type="sphere" size="{RADIUS}" mass="0" group="3" '
                f'friction="1 0.005 0.0001" condim="3" contype="2" conaffinity="1"/>{children}</body>')

    left = right = ""
    for i in range(root):  # rope0 innermost: the far end of the left chain
        left = segment(i, left)
    for i in reversed(range(root + 1, N_SEGMENTS)):
        right = segment(i, right)
    return segment(root, left + right)


class RopeEnv(TabletopEnv):
    """Drag the named rope to the named table edge: success when the rope's centroid is past a line near it.

    The rope is a 23 cm, 2.6 cm thick cable of 8 segments joined by springy, damped hinge pairs, so it bends
    in and out of the table plane (see :func:`rope_xml`). Each episode draws from ``np_random`` the rope's
    color (one of six), its start pose (centroid uniform in |x| <= 8 cm, |y| <= 6 cm, heading uniform, a
    gentle random in-plane bend at every joint) and the edge: left (-x), right (+x), back (+y, away from the
    camera) or front (-y). The instruction names both, e.g. "drag the red rope to the left edge".

    Success: the centroid of all segment centres is past x = -0.14 (left), x = +0.14 (right),
    y = +0.09 (back) or y = -0.09 (front) m, and no more than 3.5 cm above the table (dragged or laid
    there, not held up in the air); the episode then terminates with reward 1.

    Action and observation spaces, rewards and episode end are those of every task (see :mod:`envs.base`):
    a 7-D delta action of the floating parallel-jaw gripper, and the front-camera image with the 8-D gripper
    state. The expert's helpers: :meth:`segment_positions`, :meth:`centroid`, :meth:`edge_direction` and
    :meth:`goal_xy`.
    """

    task_name = "Rope"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Capsules dominate the cost of a software-rendered frame: tessellate them coarsely. The renderers
        # build their GL context (and meshes) lazily, on the first frame, so this still applies.
        self.model.vis.quality.numslices = 8
        self.model.vis.quality.numstacks = 4
        self._yaw_qadr = [self.model.jnt_qposadr[self.model.joint(f"rope_yaw{i}").id]
                          for i in range(N_SEGMENTS) if i != N_SEGMENTS // 2]
        self._root_qadr = self.model.jnt_qposadr[self.model.joint("rope_joint").id]
        self._seg_bodies = [self.model.body(f"rope{i}").id for i in range(N_SEGMENTS)]

    def task_xml(self) -> str:
        return rope_xml()

    def reset_task(self) -> None:
        color = COLORS[int(self.np_random.integers(len(COLORS)))]
        for i in range(N_SEGMENTS):
            self.set_geom_color(f"rope{i}", color)
        yaw = self.np_random.uniform(-np.pi, np.pi)
        centre = self.np_random.uniform(-np.array(CENTRE_REGION), np.array(CENTRE_REGION))
        self.set_free_body("rope_joint", [0.0, 0.0, RADIUS], yaw)
        self.data.qpos[self._yaw_qadr] = self.np_random.uniform(-START_BEND, START_BEND, size=N_SEGMENTS - 1)
        mujoco.mj_kinematics(self.model, self.data)  # shift the bent rope so its centroid is at ``centre``
        self.data.qpos[self._root_qadr:self._root_qadr + 2] += centre - self.centroid()[:2]
        self.edge = str(self.np_random.choice(list(EDGES)))
        axis, _, goal, _ = EDGES[self.edge]
        self._goal = np.array(centre, dtype=float)
        self._goal[axis] = goal
        self.instruction = TEMPLATES[int(self.np_random.integers(len(TEMPLATES)))].format(c=color, e=self.edge)

    def segment_positions(self) -> np.ndarray:
        """``(N_SEGMENTS, 3)`` segment centres (m), from one end of the rope to the other."""
        return self.data.xpos[self._seg_bodies].copy()

    def centroid(self) -> np.ndarray:
        """The mean of the segment centres (m): what success is judged on."""
        return self.data.xpos[self._seg_bodies].mean(axis=0)

    def edge_direction(self) -> np.ndarray:
        """Unit xy vector toward the named edge."""
        axis, sign, _, _ = EDGES[self.edge]
        direction = np.zeros(2)
        direction[axis] = sign
        return direction

    def goal_xy(self) -> np.ndarray:
        """Where the expert drags its grasp point to: well past the success line, level with the start centroid."""
        return self._goal.copy()

    def task_points(self) -> np.ndarray:
        """The rope's centroid, and the goal point past the named edge's line (at rope height)."""
        return np.stack([self.centroid(), np.array([*self._goal, RADIUS])])

    def goal_distance(self) -> float:
        """How far the rope's centroid still is from the line it must cross (0 once across)."""
        axis, sign, _, threshold = EDGES[self.edge]
        return float(max(0.0, -sign * (self.centroid()[axis] - threshold)))

    def is_success(self) -> bool:
        axis, sign, _, threshold = EDGES[self.edge]
        centroid = self.centroid()
        return bool(sign * (centroid[axis] - threshold) > 0 and centroid[2] < MAX_HEIGHT)
