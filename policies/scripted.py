"""Reference policies for the runner: the scripted expert (an upper bound) and uniform random actions (a floor).

Both predict one action per query (T = 1), so ``select_action`` queries every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from gr2_sim.errors import UserError
from policies.base import ChunkedPolicy


class ExpertPolicy(ChunkedPolicy):
    """A scripted expert as a policy: a gr2-sim env's own (``envs.make_expert``), or ``expert``, one made by
    another package's factory (``gr2-sim eval --policy expert --expert module:function``).

    ``env`` must be the env the runner steps: the gr2-sim experts read its simulator every step, not ``obs``.
    ``select_action`` receives the runner's observation (``{"image", "state"}``, as stored by ``gr2-sim collect``).
    """

    def __init__(self, env: Any, noise: float = 0.0, seed: int | None = None, expert: Any = None,
                 name: str = "envs:make_expert") -> None:
        super().__init__(n_action_steps=1, chunk_size=1)
        if expert is None:
            import envs

            try:
                expert = envs.make_expert(env, noise=noise, seed=seed)
            except ValueError as err:
                raise UserError(f"--policy expert: {err}") from None
        self.expert, self.noise, self.name = expert, noise, name

    def reset(self) -> None:
        super().reset()
        self.expert.reset()

    def predict_chunk(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, None]:
        """(1, A) actions: the expert's next action (advances its state machine)."""
        return np.asarray(self.expert.select_action(obs), np.float32)[None], None

    def describe(self) -> dict[str, Any]:
        return {"type": "ExpertPolicy", "expert": self.name, "noise": self.noise}


class RandomPolicy(ChunkedPolicy):
    """Uniform samples of ``action_space`` (a Box, or a Discrete given as its index), seeded once."""

    def __init__(self, action_space: spaces.Space, seed: int = 0) -> None:
        super().__init__(n_action_steps=1, chunk_size=1)
        if not isinstance(action_space, (spaces.Box, spaces.Discrete)):
            raise UserError(f"--policy random supports Box and Discrete action spaces, got {action_space}")
        self.action_space = action_space
        self.action_space.seed(seed)
        self.seed = seed

    def predict_chunk(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, None]:
        """(1, A) float32: one uniform sample."""
        return np.asarray(self.action_space.sample(), np.float32).reshape(1, -1), None

    def describe(self) -> dict[str, Any]:
        return {"type": "RandomPolicy", "seed": self.seed}
