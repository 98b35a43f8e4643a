"""The shared tabletop scene: constants and MJCF builders.

Everything that fixes what the camera sees lives here, so the robot tasks (``envs/base.py``) and the
non-robot synthetic video (``envs/synthetic.py``) are framed by the same camera over the same table.

World frame: x to the right of the image, y away from the camera, z up. The table top is the plane z = 0.
"""

from __future__ import annotations

import os

# Headless rendering: EGL (Mesa llvmpipe on machines without a GPU). Must be set before the first
# ``import mujoco`` anywhere in the process; a user who already chose a backend keeps it.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

# Named colors (RGBA). Tasks draw their objects' colors from this palette, so instructions can name them.
COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.90, 0.12, 0.12, 1.0),
    "green": (0.15, 0.75, 0.20, 1.0),
    "blue": (0.15, 0.30, 0.95, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.60, 0.20, 0.80, 1.0),
    "orange": (1.00, 0.55, 0.05, 1.0),
}

TABLE_HALF = (0.32, 0.26)  # table top half-extents (m) in x and y
WORKSPACE_LOW = np.array([-0.25, -0.20, 0.012])  # gripper (fingertip-centre) position bounds (m)
WORKSPACE_HIGH = np.array([0.25, 0.20, 0.22])
OBJECT_REGION = (0.18, 0.14)  # objects are placed with |x| <= 0.18, |y| <= 0.14

CAMERA_XML = '<camera name="front" pos="0 -0.45 0.62" xyaxes="1 0 0 0 0.785 0.62" fovy="50"/>'

PHYSICS_TIMESTEP = 0.004  # seconds per MuJoCo step
CONTROL_HZ = 10  # policy steps per second


def scene_xml(bodies: str, *, model_name: str = "tabletop", extra_assets: str = "", extra: str = "",
              offscreen: int = 64) -> str:
    """Return the MJCF of the table, lights and camera with ``bodies`` added to the world body.

    ``extra`` is inserted after the world body (actuators, equality constraints, contact excludes).
    ``offscreen`` sizes the offscreen framebuffer; renderers resize it per image (see ``render.py``).
    """
    tx, ty = TABLE_HALF
    return f"""
<mujoco model="{model_name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="{offscreen}" offheight="{offscreen}"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.45 0.35" rgb2="0.50 0.41 0.32" width="64" height="64"/>
    <material name="table" texture="grid" texrepeat="4 4" specular="0" shininess="0"/>
    {extra_assets}
  </asset>
  <default>
    <geom solref="0.008 1" solimp="0.95 0.99 0.001" friction="0.5 0.01 0.0005"/>
  </default>
  <worldbody>

    <geom name="floor" type="box" pos="0 0 -0.4" size="2 2 0.01" rgba="0.25 0.25 0.28 1"/>
    <geom name="table" type="box" pos="0 0 -0.02" size="{tx} {ty} 0.02" material="table"/>
    {CAMERA_XML}
    {bodies}
  </worldbody>
  {extra}
</mujoco>
"""
