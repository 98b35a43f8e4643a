"""Probe clips from the robot tasks' own scenes: the same camera, objects and gripper as the demonstrations.

    probe = stack_topple(seed=7)   # a SyntheticClip: frames (T, H, W, 3), masks (T, H, W) of the falling cube

``stack_topple``: in a Stack scene the named top cube is set down off-centre on the bottom one, its centre past
the bottom cube's edge, and let go at rest, the gripper parked at the back corner, open and still: the cube
topples off (gravity and support, seen by the robot's camera). ``masks`` are the pixels where the top cube is
seen (rendered with and without it); nothing occludes it.
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.objects import CUBE_HALF
from envs.stack import StackEnv
from envs.synthetic import SyntheticClip

PARK = np.array([0.22, 0.17, 0.2])  # the gripper's fingertip centre while the probe runs: out of the way
OVERHANG = (1.25, 1.6)  # the top cube's centre this many half-sizes from the bottom's, along a face normal


def _seen(env: StackEnv, geom: str, image: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels that change when ``geom`` is not drawn (alpha 0)."""
    gid = env.model.geom(geom).id
    alpha = env.model.geom_rgba[gid, 3]
    env.model.geom_rgba[gid, 3] = 0.0
    without = env._obs_camera.render(env.data)
    env.model.geom_rgba[gid, 3] = alpha
    return np.any(image != without, axis=-1)


def stack_topple(seed: int, frames: int = 9, image_size: int = 64) -> SyntheticClip:
    """Frames at the control rate of a top cube toppling off the bottom one (see the module docstring)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames!r}")
    env = StackEnv(image_size=image_size)
    try:
        env.reset(seed=int(seed))
        rng = np.random.default_rng(seed)
        env._target_pos = PARK.copy()
        env._apply_gripper_target(teleport=True)
        bottom = env.body_pos(env.bottom)
        yaw = env.body_yaw(env.bottom)
        face = yaw + np.pi / 2 * int(rng.integers(4))  # push off across one of the bottom cube's faces
        offset = rng.uniform(*OVERHANG) * CUBE_HALF * np.array([np.cos(face), np.sin(face)])
        env.set_free_body(f"{env.top}_joint", [*(bottom[:2] + offset), bottom[2] + 2 * CUBE_HALF + 0.0005], yaw)
        mujoco.mj_forward(env.model, env.data)
        still = np.array([0, 0, 0, 0, 0, 0, -1.0], np.float32)
        images, masks, positions = [], [], []
        for t in range(frames):
            if t:
                env.step(still)
            image = env._obs_camera.render(env.data)
            images.append(image)
            masks.append(_seen(env, env.top, image))
            positions.append(env.body_pos(env.top).round(4).tolist())
        meta = {"seed": int(seed), "kind": "stack_topple", "top": env.top, "bottom": env.bottom,
                "offset": np.round(offset, 4).tolist(), "positions": positions, "visible": [True] * frames,
                "instruction": env.instruction}
        return SyntheticClip(np.stack(images), "stack_topple", meta, np.stack(masks))
    finally:
        env.close()
