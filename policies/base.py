"""The policy contract every evaluated policy satisfies, and the action-queue implementation most share.

The runner (:mod:`gr2_sim.evaluate`) sees only :class:`Policy`; it never asks which model it runs.

    policy.reset()                          # start of an episode: forget queued actions
    policy.set_instruction("touch the red cube")
    while not done:
        action = policy.select_action(obs)  # (A,) float32; queries the model only when its queue is empty
        obs, ... = env.step(action)

Observations are what ``gr2-sim collect`` stores: ``{"image": (S, S, 3) uint8, "state": (D,) float32}``.
A policy never mutates the observation it is given.
"""

from __future__ import annotations

import abc
from collections import deque
from typing import Any

import numpy as np


class Policy(abc.ABC):
    """What the evaluation runner needs from a policy.

    Beyond the three methods, a policy may override the hooks below; their defaults fit any policy:

    - ``set_instruction(text)``: called by the runner after ``reset()`` at every episode start.
    - ``check_env_compat(env)``: raise :class:`gr2_sim.errors.UserError` when the policy cannot drive ``env``.
    - ``describe()``: a JSON-able dict saved in ``eval.json``.
    - ``image_size``: the square frame size the policy reads (frames are resized to it, as ``collect`` does).
    - ``query_count``: how many model queries so far (monotonic), or None if every ``select_action`` is one;
      the runner times the ``select_action`` calls that queried the model.
    - ``predicted_frames``: the frames predicted at the last query, ``(T, S, S, 3)`` uint8, or None.
    """

    image_size: int = 64
    query_count: int | None = None
    predicted_frames: np.ndarray | None = None

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything about the previous episode (queued actions, ensembles)."""

    @abc.abstractmethod
    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action to execute now: (A,) float32."""

    @abc.abstractmethod
    def predict_chunk(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Query the model once: actions (T, A) float32 for steps t .. t+T-1, and the predicted future frames
        (T, S, S, 3) uint8 (frame j is what action j leads to) or None if the policy predicts no video."""

    def set_instruction(self, text: str) -> None:  # noqa: B027  (an optional hook: no-op by default)
        """The episode's instruction ('' when the env gives none)."""

    def check_env_compat(self, env: Any) -> None:  # noqa: B027
        """Raise a UserError naming the mismatch when this policy cannot drive ``env``."""

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__}


class ChunkedPolicy(Policy):
    """A policy that predicts action chunks and executes them from a queue.

    Timeline of one query (T = prediction horizon, k = ``n_action_steps``, 1 <= k <= T)::

        step               | t   | t+1 | ... | t+k-1 | t+k | ... | t+T-1 |
        observation used   | YES | no  | no  | no    | YES: the next query  |
        action predicted   | YES | YES | YES | YES   | YES | YES | YES   |
        action executed    | YES | YES | YES | YES   | no  | no  | no    |
        frame predicted    | o_t+1 ... o_t+T (the frame each action leads to; denoising readouts only)

    Temporal ensembling (ACT, Zhao et al. 2023; needs k = 1): the model is queried every step and the action
    executed at step t averages every chunk that covers t, oldest first with weights ``w_i = exp(-m * i)``::

        query at t-2:  a(t-2) a(t-1) [a(t)]                   i = 0 (oldest)
        query at t-1:         a(t-1) [a(t)] a(t+1)            i = 1
        query at t:                  [a(t)] a(t+1) a(t+2)     i = 2
        executed at t:  sum_i w_i a_i(t) / sum_i w_i           (m = ``temporal_ensemble``; m > 0 favours old)

    Subclasses implement ``predict_chunk``; ``chunk_size`` (T), when known, validates ``n_action_steps``.
    """

    def __init__(self, n_action_steps: int = 1, chunk_size: int | None = None,
                 temporal_ensemble: float | None = None) -> None:
        if not isinstance(n_action_steps, int) or n_action_steps < 1:
            raise ValueError(f"n_action_steps={n_action_steps!r} must be an integer >= 1")
        if chunk_size is not None and n_action_steps > chunk_size:
            raise ValueError(f"n_action_steps={n_action_steps} exceeds the chunk size T={chunk_size}; "
                             f"use 1..{chunk_size}")
        if temporal_ensemble is not None:
            if n_action_steps != 1:
                raise ValueError(f"temporal ensembling queries the model every step: it needs n_action_steps=1, "
                                 f"got {n_action_steps}")
            if not np.isfinite(temporal_ensemble):
                raise ValueError(f"temporal_ensemble={temporal_ensemble!r} must be a finite coefficient (e.g. 0.01)")
        self.n_action_steps = n_action_steps
        self.chunk_size = chunk_size
        self.temporal_ensemble = temporal_ensemble
        self.query_count = 0
        self.predicted_frames = None
        self._queue: deque[np.ndarray] = deque()
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (step of the query, (T, A) actions)
        self._step = 0

    def reset(self) -> None:
        self._queue.clear()
        self._chunks.clear()
        self._step = 0
        self.predicted_frames = None

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.temporal_ensemble is not None:
            return self._ensembled_action(obs)
        if not self._queue:
            self._queue.extend(self._query(obs)[: self.n_action_steps])
        self._step += 1
        return self._queue.popleft().copy()

    def _query(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        actions, frames = self.predict_chunk(obs)
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or len(actions) < self.n_action_steps:
            raise ValueError(f"{type(self).__name__}.predict_chunk returned actions of shape {actions.shape}; "
                             f"expected (T, A) with T >= n_action_steps={self.n_action_steps}")
        self.query_count += 1
        self.predicted_frames = frames
        return actions

    def _ensembled_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._chunks.append((self._step, self._query(obs)))
        while self._step - self._chunks[0][0] >= len(self._chunks[0][1]):  # no longer covers this step
            self._chunks.popleft()
        preds = np.stack([chunk[self._step - start] for start, chunk in self._chunks])  # (n, A), oldest first
        weights = np.exp(-self.temporal_ensemble * np.arange(len(preds)))  # (n,)
        self._step += 1
        return ((weights[:, None] * preds).sum(0) / weights.sum()).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "n_action_steps": self.n_action_steps,
                "temporal_ensemble": self.temporal_ensemble}


class CheckpointPolicy(ChunkedPolicy):
    """A chunked policy loaded from a training run: it knows its checkpoint's name, action size, state size and
    frame size, checks an env against them, and clips its actions to the env's Box bounds.

    Subclasses set ``name``, ``action_dim``, ``state_dim`` (0: no state) and ``image_size`` in ``__init__``.
    """

    name: str = ""
    action_dim: int = 0
    state_dim: int = 0
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None

    def attach_env(self, env: Any) -> None:
        """Check that this checkpoint fits ``env`` (UserError if not) and clip actions to its action space."""
        self.check_env_compat(env)
        self.set_action_space(env.action_space)

    def set_action_space(self, action_space: Any) -> None:
        """Clip predicted actions to a Box's bounds (other spaces: no clipping)."""
        from gymnasium import spaces

        from gr2_sim.errors import UserError

        if isinstance(action_space, spaces.Box):
            if int(np.prod(action_space.shape)) != self.action_dim:
                raise UserError(f"action space {action_space} does not hold the model's {self.action_dim}-D actions")
            self.action_low = np.asarray(action_space.low, np.float32).reshape(-1)
            self.action_high = np.asarray(action_space.high, np.float32).reshape(-1)

    def clip(self, actions: np.ndarray) -> np.ndarray:
        """``actions`` (..., A) clipped to the attached action space's bounds, if any."""
        return actions if self.action_low is None else np.clip(actions, self.action_low, self.action_high)

    def check_env_compat(self, env: Any) -> None:
        """UserError when the env's action size, state size or frame size does not fit the checkpoint."""
        from gr2_sim.errors import UserError
        from gr2_sim.obs_adapter import ObsAdapter

        adapter = ObsAdapter(env, self.image_size)
        name = env.spec.id if getattr(env, "spec", None) else type(env.unwrapped).__name__
        if adapter.action_dim != self.action_dim:
            raise UserError(f"checkpoint {self.name} predicts {self.action_dim}-D actions but {name} takes "
                            f"{adapter.action_dim}-D actions; evaluate it on the env it was trained for")
        if self.state_dim and adapter.state_dim != self.state_dim:
            raise UserError(f"checkpoint {self.name} reads a {self.state_dim}-D state but {name} gives "
                            f"{adapter.state_dim}-D observations; evaluate it on the env, and with the --env-kwargs "
                            f"(e.g. '{{\"object_state\": true}}'), its data was collected with")
        if not adapter.uses_render:
            size = env.observation_space["image"].shape[0]
            if size < self.image_size:
                raise UserError(f"{name} gives {size}px frames but checkpoint {self.name} was trained on "
                                f"{self.image_size}px frames; make the env with image_size={self.image_size}")

