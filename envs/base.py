"""The tabletop base env: simulation, the floating gripper, rendering, seeding and the step contract.

A task subclasses :class:`TabletopEnv` and implements only what makes it a task: the bodies it adds to
the scene (:meth:`task_xml`), how an episode is randomized and described (:meth:`reset_task`), and when it
is solved (:meth:`is_success`). Everything else (the gripper, control at 10 Hz, the camera, the
observation, NaN recovery, seeding) is shared.

Action Space
    ``Box(-1, 1, (7,), float32)``: ``(dx, dy, dz, droll, dpitch, dyaw, grip)``. The first three move the
    gripper's fingertip centre by up to ``MAX_DPOS`` metres per step in the world frame; the next three
    rotate it by up to ``MAX_DROT`` radians per step about the world axes (roll and pitch are kept within
    ``MAX_TILT`` of pointing straight down); ``grip`` sets the finger opening: -1 fully open, +1 closed.
    Out-of-range values are clipped to [-1, 1]; NaN or infinite values raise ``ValueError``. The gripper
    target is kept inside the workspace box ``envs.scene.WORKSPACE_LOW/HIGH``.

Observation Space
    ``Dict(image=Box(0, 255, (S, S, 3), uint8), state=Box(-1, 1, (8,), float32))``: the front camera at
    ``image_size`` and the gripper state ``(x, y, z, qw, qx, qy, qz, opening)``: fingertip-centre position
    (m), orientation quaternion (identity = pointing down), and finger opening in [0, 1].
    With ``object_state=True`` the state has 6 more values (14 in all): the position of the object the
    instruction names and the position where success needs it (each task's :meth:`task_points`, metres,
    world frame). That is privileged information a camera-only robot lacks, the "low-dim" observation of
    robosuite/robomimic: it separates learning to act from learning to see.

Rewards
    Sparse: 1.0 on the step at which the task is solved, else 0.0.

Episode End
    Terminates when the task is solved (``info["is_success"]``). Truncated by the ``TimeLimit`` set at
    registration, or at once if the simulation becomes unstable (NaN state), with a warning.

Info
    ``is_success`` (bool, every step), ``instruction`` (str, also the ``instruction`` attribute) and
    ``goal_distance`` (float, metres: how far the task is from solved, the quantity its success test bounds;
    see each task's :meth:`goal_distance`). Evaluation reports it at the start and end of each episode, a
    measure of progress where success is rare. ``object_position`` (3 floats, metres, world frame): where the
    object the instruction names is (:meth:`task_points` row 0); evaluation reports whether it moved.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

import envs.scene as scene
from envs.render import CameraRenderer

MAX_DPOS = 0.03  # metres per step at |action| = 1
MAX_DROT = 0.15  # radians per step at |action| = 1
MAX_TILT = 0.5  # radians: roll and pitch limits around pointing down
MAX_FINGER = 0.04  # metres: each finger's travel; the jaw opens to 2 * MAX_FINGER
TCP_OFFSET = 0.048  # metres from the gripper body origin down to the fingertip centre
SUBSTEPS = round(1.0 / (scene.CONTROL_HZ * scene.PHYSICS_TIMESTEP))
HOME = np.array([0.0, -0.05, 0.18])  # fingertip-centre home position (m)
# MuJoCo counts these when it meets a NaN/huge state (and resets it): a step that raises one was unstable.
_BAD_STATE_WARNINGS = [int(mujoco.mjtWarning.mjWARN_BADQACC), int(mujoco.mjtWarning.mjWARN_BADQPOS),
                       int(mujoco.mjtWarning.mjWARN_BADQVEL)]

GRIPPER_XML = f"""
<body name="mocap" mocap="true" pos="0 0 0.3"/>
<body name="gripper" pos="0 0 0.3" gravcomp="1">
  <freejoint name="gripper_free"/>
  <inertial pos="0 0 0" mass="0.4" diaginertia="0.002 0.002 0.002"/>
  <geom name="palm" type="box" size="0.055 0.016 0.01" rgba="0.3 0.3 0.32 1"/>
  <geom name="wrist" type="box" pos="0 0 0.035" size="0.016 0.016 0.025" rgba="0.45 0.45 0.48 1" contype="0" conaffinity="0"/>
  <site name="tcp" pos="0 0 {-TCP_OFFSET}" size="0.004" rgba="1 1 1 0"/>
  <body name="finger_l" pos="0 0 0" gravcomp="1">
    <joint name="finger_l" type="slide" axis="-1 0 0" range="0 {MAX_FINGER}" damping="2" armature="0.01"/>
    <geom name="finger_l" type="box" pos="-0.007 0 -0.036" size="0.007 0.013 0.026" rgba="0.8 0.8 0.82 1"
          friction="2 0.02 0.001" condim="4" mass="0.03"/>
  </body>
  <body name="finger_r" pos="0 0 0" gravcomp="1">
    <joint name="finger_r" type="slide" axis="1 0 0" range="0 {MAX_FINGER}" damping="2" armature="0.01"/>
    <geom name="finger_r" type="box" pos="0.007 0 -0.036" size="0.007 0.013 0.026" rgba="0.8 0.8 0.82 1"
          friction="2 0.02 0.001" condim="4" mass="0.03"/>
  </body>
</body>
"""

GRIPPER_EXTRA = f"""
<equality><weld body1="mocap" body2="gripper" solref="{scene.stiffest_solref(scene.PHYSICS_TIMESTEP)}"/></equality>
<actuator>
  <position name="finger_l" joint="finger_l" kp="300" ctrlrange="0 {MAX_FINGER}" forcerange="-10 10"/>
  <position name="finger_r" joint="finger_r" kp="300" ctrlrange="0 {MAX_FINGER}" forcerange="-10 10"/>
</actuator>
"""


def euler_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)  # math, not numpy: scalar numpy calls cost ~1 us each
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([
        cr * cp * cy + sr * sp * sy,
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
    ])


def check_flag(name: str, value) -> bool:
    """``value`` as a bool, or a ValueError naming ``name`` (env kwargs arrive from JSON: 0 or "yes" are mistakes)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def wrap_angle(a: float) -> float:
    return (float(a) + math.pi) % (2 * math.pi) - math.pi


class TabletopEnv(gym.Env):
    """Base class of every gr2-sim task (see the module docstring for the spaces and the episode contract)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": scene.CONTROL_HZ}
    task_name = "Tabletop"

    def __init__(self, image_size: int = 64, render_mode: str | None = None, render_size: int = 256,
                 object_state: bool = False):
        if int(image_size) < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.object_state = check_flag("object_state", object_state)
        self.model = mujoco.MjModel.from_xml_string(
            scene.scene_xml(GRIPPER_XML + self.task_xml(), model_name=self.task_name, extra=GRIPPER_EXTRA,
                            extra_assets=self.task_assets()))
        self.data = mujoco.MjData(self.model)
        self._gripper_qadr = self.model.jnt_qposadr[self.model.joint("gripper_free").id]
        self._gripper_dofadr = self.model.jnt_dofadr[self.model.joint("gripper_free").id]
        self._finger_qadr = [self.model.jnt_qposadr[self.model.joint(n).id] for n in ("finger_l", "finger_r")]
        self._tcp_site = self.model.site("tcp").id
        self._obs_camera = CameraRenderer(self.model, self.image_size, self.image_size)
        self._render_camera = CameraRenderer(self.model, self.render_size, self.render_size)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, shape=(self.image_size, self.image_size, 3), dtype=np.uint8),
            "state": spaces.Box(np.array([-1.0] * 7 + [0.0] + [-1.0] * 6 * self.object_state, dtype=np.float32),
                                np.ones(8 + 6 * self.object_state, dtype=np.float32), dtype=np.float32),
        })
        self.instruction = ""
        self._target_pos = HOME.copy()
        self._target_rpy = np.zeros(3)
        self._grip = -1.0
        self._last_obs: dict[str, np.ndarray] | None = None

    # ----------------------------------------------------------------- what a task implements
    def task_xml(self) -> str:
        """MJCF bodies this task adds to the world body."""
        raise NotImplementedError

    def task_assets(self) -> str:
        """MJCF assets (meshes) that this task's bodies use; none by default."""
        return ""

    def reset_task(self) -> None:
        """Randomize the episode with ``self.np_random`` (positions, colors) and set ``self.instruction``."""
        raise NotImplementedError

    def is_success(self) -> bool:
        raise NotImplementedError

    def goal_distance(self) -> float:
        """Metres between where the task's object (or the gripper) is and where success needs it."""
        raise NotImplementedError

    def task_points(self) -> np.ndarray:
        """(2, 3): where the object the instruction names is, and where success needs it (world, metres).

        Appended to the state with ``object_state=True``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- simulator helpers for tasks/experts
    def body_pos(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def body_yaw(self, name: str) -> float:
        mat = self.data.body(name).xmat.reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def set_free_body(self, joint: str, pos, yaw: float = 0.0) -> None:
        """Place a free-jointed body at ``pos`` with heading ``yaw``, at rest."""
        jid = self.model.joint(joint).id
        qadr, dadr = self.model.jnt_qposadr[jid], self.model.jnt_dofadr[jid]
        self.data.qpos[qadr:qadr + 3] = pos
        self.data.qpos[qadr + 3:qadr + 7] = euler_to_quat(0.0, 0.0, yaw)
        self.data.qvel[dadr:dadr + 6] = 0.0

    def set_geom_color(self, geom: str, color: str, alpha: float | None = None) -> None:
        rgba = np.array(scene.COLORS[color], dtype=np.float32)
        if alpha is not None:
            rgba[3] = alpha
        self.model.geom_rgba[self.model.geom(geom).id] = rgba

    def sample_positions(self, n: int, min_dist: float, region=scene.OBJECT_REGION) -> list[np.ndarray]:
        """``n`` xy positions in the object region at least ``min_dist`` apart (rejection sampling)."""
        for _ in range(1000):
            pts = [self.np_random.uniform(-np.array(region), np.array(region)) for _ in range(n)]
            if all(np.linalg.norm(a - b) >= min_dist for i, a in enumerate(pts) for b in pts[i + 1:]):
                return pts
        raise RuntimeError(f"could not place {n} objects {min_dist} m apart in region {region}")

    @property
    def tcp_pos(self) -> np.ndarray:
        """Fingertip-centre position (m)."""
        return self.data.site_xpos[self._tcp_site].copy()

    @property
    def gripper_yaw(self) -> float:
        return float(self._target_rpy[2])

    @property
    def gripper_opening(self) -> float:
        """Finger opening in [0, 1] (0 closed, 1 fully open)."""
        opening = float(self.data.qpos[self._finger_qadr].sum()) / (2 * MAX_FINGER)
        return min(max(opening, 0.0), 1.0)

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        start = HOME + self.np_random.uniform([-0.05, -0.03, -0.03], [0.05, 0.03, 0.03])
        self._target_pos = start
        self._target_rpy = np.zeros(3)
        self._grip = -1.0
        self._apply_gripper_target(teleport=True)
        self.reset_task()
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)  # let objects settle before the first frame
        self._last_obs = self._get_obs()
        return self._last_obs, self._info()

    def step(self, action):
        # Every line here runs once per control step: plain floats and ndarray methods, not scalar np.* calls.
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (7,):
            raise ValueError(f"action must have 7 values (dx, dy, dz, droll, dpitch, dyaw, grip), got shape {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action contains NaN or infinite values: {action.tolist()}")
        action = action.clip(-1.0, 1.0)
        self._target_pos = (self._target_pos + action[:3] * MAX_DPOS).clip(scene.WORKSPACE_LOW, scene.WORKSPACE_HIGH)
        roll, pitch, yaw = (self._target_rpy + action[3:6] * MAX_DROT).tolist()
        self._target_rpy = np.array([min(max(roll, -MAX_TILT), MAX_TILT), min(max(pitch, -MAX_TILT), MAX_TILT),
                                     wrap_angle(yaw)])
        self._grip = float(action[6])
        self._apply_gripper_target()

        saved = (self.data.qpos.copy(), self.data.qvel.copy(), self.data.time)
        before = self._instability_count()
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)
        # MuJoCo resets the state itself when it meets NaN/huge values and counts a warning: detect both.
        if self._instability_count() > before or not np.isfinite(self.data.qpos).all():
            warnings.warn(f"{self.task_name}: MuJoCo became unstable (NaN state); truncating the episode",
                          RuntimeWarning, stacklevel=2)
            self.data.qpos[:], self.data.qvel[:], self.data.time = saved
            self.data.qvel[~np.isfinite(self.data.qvel)] = 0.0
            self.data.qpos[~np.isfinite(self.data.qpos)] = 0.0
            mujoco.mj_forward(self.model, self.data)
            info = self._info()
            info["unstable"] = True
            return {k: v.copy() for k, v in self._last_obs.items()}, 0.0, False, True, info

        self._last_obs = self._get_obs()
        info = self._info()
        success = info["is_success"]
        return self._last_obs, float(success), success, False, info

    def render(self):
        if self.render_mode == "rgb_array":
            return self._render_camera.render(self.data)
        return None

    def close(self):
        self._obs_camera.close()
        self._render_camera.close()

    # ----------------------------------------------------------------- internals
    def _gripper_quat(self) -> np.ndarray:
        return euler_to_quat(*self._target_rpy)

    def _apply_gripper_target(self, teleport: bool = False) -> None:
        quat = self._gripper_quat()
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat)
        body_pos = self._target_pos + rot[2::3] * TCP_OFFSET  # the body origin sits TCP_OFFSET up the local z axis
        self.data.mocap_pos[0] = body_pos
        self.data.mocap_quat[0] = quat
        finger = MAX_FINGER * (1.0 - self._grip) / 2.0
        self.data.ctrl[:2] = finger
        if teleport:
            q = self._gripper_qadr
            self.data.qpos[q:q + 3] = body_pos
            self.data.qpos[q + 3:q + 7] = quat
            self.data.qvel[self._gripper_dofadr:self._gripper_dofadr + 6] = 0.0
            self.data.qpos[self._finger_qadr] = finger

    def _instability_count(self) -> int:
        return int(self.data.warning.number[_BAD_STATE_WARNINGS].sum())

    def _get_obs(self) -> dict[str, np.ndarray]:
        q = self._gripper_qadr
        state = np.empty(8 + 6 * self.object_state, dtype=np.float32)
        state[:3] = self.data.site_xpos[self._tcp_site]
        state[3:7] = self.data.qpos[q + 3:q + 7]
        state[7] = self.gripper_opening
        if self.object_state:
            state[8:] = np.clip(self.task_points().reshape(6), -1.0, 1.0)
        return {"image": self._obs_camera.render(self.data), "state": state}

    def _info(self) -> dict[str, Any]:
        return {"is_success": bool(self.is_success()), "instruction": self.instruction,
                "goal_distance": float(self.goal_distance()),
                "object_position": [float(v) for v in self.task_points()[0]]}
