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
# llvmpipe rasterizes in this thread, not in a pool of helper threads: a 64x64 frame is too small to split,
# and handing it over and waiting for it cost ~5% of an env step (more on a busy machine). Read when Mesa
# loads, i.e. at the first frame; a user who set it keeps theirs.
os.environ.setdefault("LP_NUM_THREADS", "0")

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

# Framed so the object region fills more of the image than the first camera (pos 0 -0.45 0.62, fovy 50), whose
# frames showed each cube as a few pixels and a model trained on them hardly looked at them: see docs/results.md
CAMERA_XML = '<camera name="front" pos="0 -0.40 0.50" xyaxes="1 0 0 0 0.80 0.60" fovy="45"/>'

# Seconds per MuJoCo step of the robot tasks: 12 substeps per 10 Hz control step. Physics was ~40% of an env
# step at 25 x 4 ms; at 1/120 s the experts still solve 200/200 held-out seeds per task, resting cubes sink
# 0.04 mm and a carried cube moves < 2.5 mm in the grasp. 10 ms was too coarse (Stack expert 96%: cubes
# slip). envs.synthetic keeps 4 ms for its bouncing balls.
PHYSICS_TIMESTEP = 1 / 120
CONTROL_HZ = 10  # policy steps per second


def stiffest_solref(timestep: float) -> str:
    """``solref`` time constant 2 * ``timestep`` (s), critically damped: the stiffest MuJoCo integrates stably
    (it would raise a smaller one to this anyway), so contacts and welds are as hard as the timestep allows."""
    return f"{2 * timestep:g} 1"


def scene_xml(bodies: str, *, model_name: str = "tabletop", extra_assets: str = "", extra: str = "",
              offscreen: int = 64, timestep: float = PHYSICS_TIMESTEP) -> str:
    """Return the MJCF of the table, lights and camera with ``bodies`` added to the world body.

    ``extra`` is inserted after the world body (actuators, equality constraints, contact excludes).
    ``offscreen`` sizes the offscreen framebuffer; renderers resize it per image (see ``render.py``).
    ``timestep`` (s) is MuJoCo's step; the default contact ``solref`` follows it (:func:`stiffest_solref`).
    """
    tx, ty = TABLE_HALF
    return f"""
<mujoco model="{model_name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="5"/>
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
    <geom solref="{stiffest_solref(timestep)}" solimp="0.95 0.99 0.001" friction="0.5 0.01 0.0005"/>
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
