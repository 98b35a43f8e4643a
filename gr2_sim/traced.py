"""A TorchScript-traced VideoActionDiT for rollouts: the same numbers, less Python per query.

A policy query is a batch of one through ~80 tokens: most of its time on a CPU is per-operator Python and
dispatch overhead, not arithmetic. Tracing the forward once (for the fixed shapes of a policy query) and
freezing it removes most of that (``gr2-sim eval`` prints the query latency; README, "Policies and
evaluation"). :class:`TracedDiT` stands in for the model wherever the diffusion sampler calls it
(``Diffusion.head_actions``, ``Diffusion.ddim_sample``):

- one trace per (need_video, has-state) combination, built on first use, for the first input shapes seen;
  any other shape (or ``return_attention``, dropout, targets) goes to the eager model;
- the weights are frozen into the trace when it is built: load new weights into a new TracedDiT;
- the first traced result is checked against the eager model and the trace is dropped (eager from then on,
  with a warning) if they differ by more than ``atol``: a trace can silently freeze a Python branch.

Why not ``torch.compile``: it needs a C++ toolchain and compiles every shape before the first query, a cost
each ``gr2-sim eval`` and test would pay; a trace is one recorded forward pass. torch 2.13
deprecates ``torch.jit``; if a later torch drops it, tracing fails and the policy runs eagerly.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


class _Forward(nn.Module):
    """The model's forward with the flags fixed, returning plain tensors (what ``torch.jit.trace`` needs)."""

    def __init__(self, model: nn.Module, need_video: bool) -> None:
        super().__init__()
        self.model, self.need_video = model, need_video

    def forward(self, cond, future, t, tokens, state=None):
        out = self.model(cond, future, t, tokens, state, need_video=self.need_video)
        return (out["video_pred"], out["actions"]) if self.need_video else out["actions"]


class TracedDiT:
    """Call-compatible with :class:`gr2_sim.model.VideoActionDiT` for inference; attributes (``config``,
    ``text_encoder``, ...) come from the wrapped model."""

    def __init__(self, model: nn.Module, atol: float = 1e-4) -> None:
        self.model = model.eval()
        self.atol = atol
        self._traces: dict[tuple, tuple] = {}  # (need_video, has_state) -> (input shapes, trace or None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    @torch.inference_mode()
    def __call__(self, cond, future, t, tokens, state=None, need_video: bool = True, **kwargs) -> dict:
        if kwargs or self.model.training:
            return self.model(cond, future, t, tokens, state, need_video=need_video, **kwargs)
        args = (cond, future, t, tokens) + ((state,) if state is not None else ())
        key, shapes = (need_video, state is not None), [tuple(a.shape) for a in args]
        if key not in self._traces:
            self._traces[key] = (shapes, self._trace(need_video, args))
        traced_shapes, traced = self._traces[key]
        if traced is None or shapes != traced_shapes:
            return self.model(cond, future, t, tokens, state, need_video=need_video)
        result = traced(*args)
        video, actions = result if need_video else (None, result)
        return {"video_pred": video, "actions": actions}

    def _trace(self, need_video: bool, args: tuple):
        module = _Forward(self.model, need_video).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings; torch 2.13's deprecation of torch.jit (above)
            try:
                traced = torch.jit.freeze(torch.jit.trace(module, args, check_trace=False))
            except Exception as err:  # noqa: BLE001 - any tracing failure (or no torch.jit) means: run eagerly
                failure = err
            else:
                failure = None
        if failure is not None:
            warnings.warn(f"tracing the model failed ({failure!r}); running it eagerly", stacklevel=3)
            return None
        expected, got = module(*args), traced(*args)
        pairs = zip(expected, got, strict=True) if need_video else [(expected, got)]
        if not all(torch.allclose(e, g, atol=self.atol, rtol=0) for e, g in pairs):
            warnings.warn("the traced model disagrees with the eager one; running it eagerly", stacklevel=3)
            return None
        return traced
