"""Make any Gymnasium env look like a gr2-sim env to the data pipeline: a square RGB frame, a flat state
vector, a flat float action vector and an instruction string per episode.

- A Dict observation with an ``image`` key: that image (resized if it is not ``image_size``); every other
  key, flattened in the Dict's key order, is the state (for gr2-sim envs just ``state``, shape (8,)).
- Any other observation: the frame comes from ``env.render()`` (the env is made with
  ``render_mode='rgb_array'``) and the whole observation, flattened, is the state.
- Actions: a Box is flattened (A = its size); a Discrete is stored as its index, A = 1.
- The instruction is ``info['instruction']``, else ``env.unwrapped.instruction``, else '' (warned once).
- Success is ``info['is_success']``, else ``info['success'] > 0``, else a key the user names (:func:`read_success`).
- Env ids: any registered Gymnasium id, or ``module:ns/Id-v0`` for an id that ``module`` registers on import.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gr2_sim.errors import UserError


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: area averaging when shrinking, nearest neighbour when growing."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    image = image[..., :3]
    if image.shape[:2] == (size, size):
        return image.astype(np.uint8, copy=False)
    for axis in (0, 1):
        n = image.shape[axis]
        if n >= size:  # average the input pixels that fall in each output pixel
            edges = (np.arange(size) * n) // size
            counts = np.diff(np.append(edges, n)).astype(np.float64)
            sums = np.add.reduceat(image.astype(np.float64), edges, axis=axis)
            image = sums / counts.reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        else:
            image = np.take(image, (np.arange(size) * n) // size, axis=axis)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _flat_space(space: spaces.Space) -> int:
    try:
        return int(spaces.flatdim(space))
    except (NotImplementedError, ValueError) as err:
        raise UserError(f"observation space {space} cannot be flattened into a state vector ({err})") from None


class ObsAdapter:
    """Converts one env's observations and actions to the dataset's arrays.

    ``state_dim`` and ``action_dim`` come from the env's spaces. ``uses_render`` tells whether frames come
    from ``env.render()`` rather than the observation.
    """

    def __init__(self, env: gym.Env, image_size: int = 64):
        self.env = env
        self.image_size = int(image_size)
        obs_space, act_space = env.observation_space, env.action_space
        self.uses_render = not (isinstance(obs_space, spaces.Dict) and "image" in obs_space.spaces)
        if self.uses_render:
            self._state_space, self._state_keys = obs_space, None
        else:
            self._state_keys = [k for k in obs_space.spaces if k != "image"]
            self._state_space = spaces.Dict({k: obs_space.spaces[k] for k in self._state_keys})
        self.state_dim = _flat_space(self._state_space) if (self._state_keys is None or self._state_keys) else 0
        if isinstance(act_space, spaces.Box):
            self.action_dim = int(np.prod(act_space.shape))
        elif isinstance(act_space, spaces.Discrete):
            self.action_dim = 1
        else:
            raise UserError(f"action space {act_space} is not supported (only Box and Discrete)")
        self._warned_instruction = False

    def _name(self) -> str:
        return self.env.spec.id if self.env.spec else type(self.env.unwrapped).__name__

    def frame_and_state(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """The (image_size, image_size, 3) uint8 frame and the (state_dim,) float32 state for ``obs``."""
        if self.uses_render:
            try:
                frame = self.env.render()
            except gym.error.DependencyNotInstalled as err:
                raise UserError(f"cannot render {self._name()} for its frames: {err}") from None
            if frame is None:
                raise UserError(f"{self._name()}: the observation has no image "
                                "and env.render() returned nothing; the env must support render_mode='rgb_array'")
            state = spaces.flatten(self._state_space, obs)
        else:
            frame = obs["image"]
            state = spaces.flatten(self._state_space, {k: obs[k] for k in self._state_keys}) if self._state_keys \
                else np.zeros(0)
        return resize_image(frame, self.image_size), np.asarray(state, dtype=np.float32).reshape(-1)

    def action_array(self, action: Any) -> np.ndarray:
        """(action_dim,) float32 form of an action for this env's action space."""
        return np.asarray(action, dtype=np.float32).reshape(self.action_dim)

    def instruction(self, info: dict) -> str:
        text = info.get("instruction")
        if text is None:
            text = getattr(self.env.unwrapped, "instruction", None)
        if text is None:
            if not self._warned_instruction:
                warnings.warn(f"{self._name()} gives no instruction "
                              "(info['instruction'] or env.instruction); storing ''", stacklevel=2)
                self._warned_instruction = True
            text = ""
        return str(text)


SUCCESS_KEYS = ("is_success", "success")  # read in this order when no --success-key is named


def read_success(info: dict, key: str | None = None) -> tuple[bool, str | None]:
    """``(success, key read)`` from a step's ``info``.

    Without ``key``: ``info["is_success"]`` (Gymnasium's convention, and gr2-sim's), else ``info["success"] > 0``
    (the float several benchmark suites report), else ``(False, None)``: the env says nothing about success.
    With ``key`` (``--success-key``): ``info[key] > 0``, and ``(False, None)`` while ``info`` lacks it.
    """
    for name in (key,) if key else SUCCESS_KEYS:
        if name in info:
            value = info[name]
            try:
                return bool(np.asarray(value, dtype=np.float64).reshape(-1)[0] > 0), name
            except (TypeError, ValueError, IndexError):
                return bool(value), name
    return False, None


def import_modules(modules: Iterable[str], option: str = "--import") -> None:
    """Import each module (a package that registers its Gymnasium envs when imported); UserError if one fails."""
    for name in modules:
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise UserError(f"{option} {name!r}: cannot import it ({err}); install the package that provides it "
                            "or correct the name") from None


def split_env_id(env_id: str) -> tuple[str | None, str]:
    """Gymnasium's ``module:ns/Id-v0`` form -> ``("module", "ns/Id-v0")``; a plain id -> ``(None, id)``."""
    if ":" not in env_id:
        return None, env_id
    module, _, name = env_id.partition(":")
    if not module or not name or ":" in name:
        raise UserError(f"env id {env_id!r}: expected 'ns/Id-v0' or 'module:ns/Id-v0' (the module is imported "
                        "first, to register the id)")
    return module, name


def registered_env_ids() -> list[str]:
    import envs  # noqa: F401  (registers GR2Sim/*)

    return sorted(k for k in gym.registry if k.startswith("GR2Sim/"))


def check_env_id(env_id: str, imports: Iterable[str] = ()) -> gym.envs.registration.EnvSpec:
    """The Gymnasium spec of ``env_id``, after importing ``imports`` (``--import``) and the module of a
    ``module:ns/Id`` id; a :class:`UserError` that says what to do when the id is not registered."""
    import envs  # noqa: F401

    import_modules(imports)
    module, name = split_env_id(env_id)
    if module is not None:
        import_modules([module], option=f"--env {env_id}: module")
    try:
        return gym.spec(name)
    except (gym.error.Error, ModuleNotFoundError, ImportError) as err:
        raise UserError(f"unknown env id {env_id!r} ({err}); gr2-sim envs: {', '.join(registered_env_ids())}. "
                        "Any installed Gymnasium id works too (e.g. InvertedPendulum-v5); an id that a package "
                        "registers when imported needs that package: --env module:ns/Id-v0 or --import module") \
            from None


def make_env(env_id: str, env_kwargs: dict | None = None, image_size: int = 64,
             max_episode_steps: int = 1000, imports: Iterable[str] = ()) -> gym.Env:
    """``gym.make`` with ``render_mode='rgb_array'``; gr2-sim envs also get ``image_size``. Envs registered
    without a time limit get ``max_episode_steps`` so an episode always ends. ``env_id`` may be
    ``module:ns/Id-v0`` (the module is imported first); ``imports`` are imported before it (``--import``)."""
    spec = check_env_id(env_id, imports)
    kwargs = dict(env_kwargs or {})
    if spec.id.startswith("GR2Sim/"):
        kwargs.setdefault("image_size", image_size)
    if spec.max_episode_steps is None:
        kwargs.setdefault("max_episode_steps", max_episode_steps)
    try:
        return gym.make(spec.id, render_mode="rgb_array", **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot make {env_id} with --env-kwargs {env_kwargs}: {err}") from None
    except gym.error.DependencyNotInstalled as err:
        raise UserError(f"cannot make {env_id}: {err}") from None
