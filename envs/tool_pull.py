"""ToolPull: the named cube lies out of the gripper's reach; pull it onto a target with a hook."""

from __future__ import annotations

import numpy as np

import envs.scene as scene
from envs.base import TabletopEnv, check_flag
from envs.objects import CUBE_HALF, cube, target_pad

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
TEMPLATES = ("use the hook to pull the {c} cube onto the {t} target",
             "pull the {c} cube closer to the {t} target with the hook",
             "use the stick to pull the {c} cube closer")
TOOL_RGBA = "0.16 0.16 0.2 1"  # dark: it stands out from the table, the cubes and the light grey fingers

# The hook, in its body frame (origin at the handle's centre, the shaft along +y, the hook end along +x):
HANDLE_HALF = (0.015, 0.025, 0.012)  # a thick grip: the fingers' position servo squeezes harder on a wide object
SHAFT_HALF = (0.008, 0.07, 0.008)  # capsules: radius the last value
HOOK_HALF = (0.04, 0.007, 0.008)
SHAFT_POS = (0.0, HANDLE_HALF[1] + SHAFT_HALF[1], SHAFT_HALF[2] - HANDLE_HALF[2])
HOOK_POS = (HOOK_HALF[0] - SHAFT_HALF[0], SHAFT_POS[1] + SHAFT_HALF[1] + HOOK_HALF[1], SHAFT_POS[2])
CUBE_Y = (-0.235, -0.23)  # the cubes' y, near the camera edge of the table
# The gripper's target y stops at -0.14 here (-0.20 in the other tasks): a jaw turned across y and open reaches
# 5.4 cm beyond its centre, so the cubes' nearest corner (y >= -0.202 at any yaw) stays 8 mm clear of it.
WORKSPACE_LOW = np.array([scene.WORKSPACE_LOW[0], -0.14, scene.WORKSPACE_LOW[2]])
TOOL_YAW = np.pi  # the hook's heading that points its shaft at the cubes (-y) and its end to the left (-x)


def hook_tool(name: str) -> str:
    """A free L-shaped hook: a box handle, then a capsule shaft and a short perpendicular capsule end (geoms
    ``<name>_handle/_shaft/_hook``). Capsules: their contacts with the boxes (table, cubes) cost MuJoCo about
    half what box-box ones do. They collide hidden in geom group 3; the hook is drawn as one mesh
    (``<name>_visual``, from :func:`hook_mesh`): a software-rendered frame pays per drawn geom, and more for a
    capsule's many triangles."""
    def part(kind: str, geom: str, condim: int) -> str:
        return (f'<geom name="{name}_{kind}" {geom} mass="0.02" friction="0.8 0.01 0.001" condim="{condim}" '
                f'group="3"/>')

    def capsule(kind: str, half, pos) -> str:  # a capsule of radius half[2] along the box's longer side
        axis = np.array([half[0] - half[2], 0.0, 0.0]) if half[0] > half[1] else np.array([0.0, half[1] - half[2], 0.0])
        a, b = np.asarray(pos) - axis, np.asarray(pos) + axis
        return part(kind, f'type="capsule" size="{half[2]}" fromto="{_fmt(a)} {_fmt(b)}"', condim=3)

    handle = part("handle", f'type="box" size="{_fmt(HANDLE_HALF)}"', condim=4)  # torsional friction: the grip
    return f"""
<body name="{name}" pos="0 0 {HANDLE_HALF[2]}">
  <freejoint name="{name}_joint"/>
  {handle}{capsule("shaft", SHAFT_HALF, SHAFT_POS)}{capsule("hook", HOOK_HALF, HOOK_POS)}
  <geom name="{name}_visual" type="mesh" mesh="{name}_visual" rgba="{TOOL_RGBA}" mass="0" contype="0"
        conaffinity="0"/>
</body>"""


def hook_mesh(name: str) -> str:
    """The ``<mesh>`` asset that draws :func:`hook_tool` ``name``: its three parts as boxes, flat-shaded."""
    vertices: list[tuple[float, float, float]] = []
    faces: list[tuple[int, int, int]] = []
    r = SHAFT_HALF[2]
    for half, pos in ((HANDLE_HALF, (0.0, 0.0, 0.0)), ((r, SHAFT_HALF[1], r), SHAFT_POS),
                      ((HOOK_HALF[0], r, r), HOOK_POS)):
        (hx, hy, hz), (px, py, pz) = half, pos
        outline = [(px - hx, py - hy), (px + hx, py - hy), (px + hx, py + hy), (px - hx, py + hy)]  # counter-clockwise
        z0, z1 = pz - hz, pz + hz
        quads = [[(*outline[i], z0), (*outline[(i + 1) % 4], z0), (*outline[(i + 1) % 4], z1), (*outline[i], z1)]
                 for i in range(4)]
        for polygon in [*quads, [(x, y, z1) for x, y in outline], [(x, y, z0) for x, y in reversed(outline)]]:
            start = len(vertices)
            vertices.extend(polygon)
            faces.extend((start, start + k, start + k + 1) for k in range(1, len(polygon) - 1))
    vertex = " ".join(f"{v:.5f}" for xyz in vertices for v in xyz)
    face = " ".join(str(i) for tri in faces for i in tri)
    return f'<mesh name="{name}_visual" vertex="{vertex}" face="{face}"/>'


def _fmt(values) -> str:
    return " ".join(f"{float(v):.4f}" for v in values)


class ToolPullEnv(TabletopEnv):
    """Use the hook to pull the named cube, out of the gripper's reach, onto the named target pad.

    Two cubes of distinct colors (one named, one distractor) lie at the table's near edge (the camera's side),
    beyond the gripper's reach (its workspace stops at y = -0.14 here: neither a finger nor the open jaw
    touches them). A dark L-shaped hook (a thick handle, a shaft and a short perpendicular end) lies within reach,
    turned up to +-0.4 rad from pointing at them; a flat target pad of a third color lies between them and
    the middle of the table.
    To solve it, grasp the handle, lift, put the hook's end down behind the cube and pull it back.
    Success: the cube's centre within 3.5 cm of the pad's. Instruction e.g. "use the hook to pull the red
    cube onto the blue target". ``distractor=False`` leaves the distractor cube out (the rest of the scene is
    the same for the same seed).

    Action Space, Observation Space, Rewards, Episode End: as every task, see :mod:`envs.base`
    (``info["goal_distance"]``: the cube's horizontal distance to the pad's centre; ``object_state``: the
    cube's centre and the pad's centre at the cube's resting height).
    """

    task_name = "ToolPull"
    workspace_low = WORKSPACE_LOW
    SUCCESS_DIST = 0.035

    def __init__(self, *args, distractor: bool = True, **kwargs):
        self.distractor = check_flag("distractor", distractor)
        super().__init__(*args, **kwargs)

    def task_xml(self) -> str:
        return (target_pad("target", radius=0.045) + hook_tool("tool") + cube("cube")
                + (cube("distractor") if self.distractor else ""))

    def task_assets(self) -> str:
        return hook_mesh("tool")

    def reset_task(self) -> None:
        rng = self.np_random
        c_cube, c_target, c_dist = (COLORS[i] for i in rng.choice(len(COLORS), 3, replace=False))
        cube_x = rng.uniform(-0.14, 0.14)
        side = 1.0 if cube_x < 0 else -1.0  # the distractor goes to the side with room
        dist_x = cube_x + side * rng.uniform(0.12, 0.16)
        cube_y, dist_y = rng.uniform(*CUBE_Y, size=2)
        self.set_free_body("cube_joint", [cube_x, cube_y, CUBE_HALF], rng.uniform(-np.pi, np.pi))
        dist_yaw = rng.uniform(-np.pi, np.pi)  # drawn either way: the rest of the scene stays the same
        if self.distractor:
            self.set_free_body("distractor_joint", [dist_x, dist_y, CUBE_HALF], dist_yaw)
        target_xy = [cube_x + rng.uniform(-0.02, 0.02), rng.uniform(-0.11, -0.07)]
        self.model.body_pos[self.model.body("target").id] = [*target_xy, 0.0]
        tool_xy = [cube_x + side * rng.uniform(0.09, 0.15), rng.uniform(0.04, 0.10)]  # beside the target pad
        self.set_free_body("tool_joint", [*tool_xy, HANDLE_HALF[2]], TOOL_YAW + rng.uniform(-0.4, 0.4))
        self.set_geom_color("cube", c_cube)
        if self.distractor:
            self.set_geom_color("distractor", c_dist)
        self.set_geom_color("target", c_target)
        self.instruction = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(c=c_cube, t=c_target)

    def hook_end(self) -> np.ndarray:
        """World position (m) of the centre of the hook's perpendicular end."""
        return self.data.geom("tool_hook").xpos.copy()

    def task_points(self) -> np.ndarray:
        """The named cube's centre, and the target pad's centre at the cube's resting height."""
        return np.stack([self.body_pos("cube"), self.body_pos("target") + np.array([0.0, 0.0, CUBE_HALF])])

    def goal_distance(self) -> float:
        """Horizontal distance from the cube's centre to the target pad's (success under 3.5 cm)."""
        return float(np.linalg.norm(self.body_pos("cube")[:2] - self.body_pos("target")[:2]))

    def is_success(self) -> bool:
        return self.goal_distance() < self.SUCCESS_DIST
