"""Fast headless camera rendering.

Two things make a 64x64 MuJoCo frame cost well under a millisecond on a CPU (llvmpipe): no shadows or
reflections, and an offscreen framebuffer the size of the image rather than a large default one. Each
``CameraRenderer`` creates its ``mujoco.Renderer`` lazily, on the first frame, so that an env can be built
in one process and stepped in a forked worker (an OpenGL context created before ``fork`` hangs).
"""

from __future__ import annotations

import mujoco
import numpy as np

import envs.scene  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)


class CameraRenderer:
    """Renders one named camera of a model at a fixed size, creating its GL context on first use."""

    def __init__(self, model: mujoco.MjModel, width: int, height: int, camera: str = "front"):
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        self.model = model
        self.width = int(width)
        self.height = int(height)
        self.camera = camera
        self._renderer: mujoco.Renderer | None = None

    def _make(self) -> mujoco.Renderer:
        # The framebuffer size is read from the model when the context is created: size it to this image.
        vis = self.model.vis.global_
        old = (vis.offwidth, vis.offheight)
        vis.offwidth, vis.offheight = self.width, self.height
        try:
            renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
        finally:
            vis.offwidth, vis.offheight = old
        flags = renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        return renderer

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """Return the camera image as ``(height, width, 3) uint8``."""
        if self._renderer is None:
            self._renderer = self._make()
        self._renderer.update_scene(data, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
