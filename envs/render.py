"""Fast headless camera rendering.

Three things make a 64x64 MuJoCo frame cost well under a millisecond on a CPU (llvmpipe): no shadows or
reflections, an offscreen framebuffer the size of the image rather than a large default one, and calling
MuJoCo's renderer directly. ``mujoco.Renderer`` spends ~0.15 ms of Python per frame around the GL work
(a camera looked up by name and a new ``MjvCamera``, the scene flags copied and restored, a fresh output
buffer); here the camera, options and buffer are made once and a frame is ``mjv_updateScene`` +
``mjr_render`` + ``mjr_readPixels``.

Each ``CameraRenderer`` creates its GL context lazily, on the first frame, so that an env can be built in
one process and stepped in a forked worker (an OpenGL context created before ``fork`` hangs).
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
        self._gl = None
        self._context: mujoco.MjrContext | None = None

    def _make(self) -> None:
        from mujoco import gl_context  # imported here: it loads the GL backend chosen by MUJOCO_GL

        self._gl = gl_context.GLContext(self.width, self.height)
        self._gl.make_current()
        # The framebuffer size is read from the model when the context is created: size it to this image.
        vis = self.model.vis.global_
        old = (vis.offwidth, vis.offheight)
        vis.offwidth, vis.offheight = self.width, self.height
        try:
            self._context = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_50)
        finally:
            vis.offwidth, vis.offheight = old
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(self.model, maxgeom=max(100, 2 * self.model.ngeom))
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX):
            self._scene.flags[flag] = False
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._camera.fixedcamid = self.model.camera(self.camera).id
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._pixels = np.empty((self.height, self.width, 3), np.uint8)

    def render(self, data: mujoco.MjData) -> np.ndarray:
        """Return the camera image as a new ``(height, width, 3) uint8`` array."""
        if self._context is None:
            self._make()
        self._gl.make_current()  # another renderer (the env's other camera, another env) may be current
        mujoco.mjv_updateScene(self.model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL,
                               self._scene)
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        return self._pixels[::-1].copy()  # OpenGL rows run bottom-up

    def close(self) -> None:
        if self._context is not None:
            self._gl.make_current()
            self._context.free()
            self._gl.free()
            self._context = self._gl = None
