"""Inverse dynamics: which action turned frame o_t into frame o_t+1?

GR-2's alternative action readout: let the video model imagine the future, then label each imagined step with
the action that produces it. A small CNN sees the two frames stacked on channels (+ optionally the robot state
at the chunk start, the only state observed at inference time) and regresses the normalised action::

    (o_t, o_t+1): (B, 3, H, W) x 2 in [-1, 1] -> cat -> (B, 6, H, W) -> 4 stride-2 convs -> pool -> MLP -> a_t (B, A)

Run folders use the DiT's layout (:mod:`gr2_sim.checkpoint`): ``config.json`` = ``{"kind": "idm", "model": {..}}``,
``model.safetensors`` with "ema." / "model." weights, ``normalizer.json``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from gr2_sim import checkpoint as ckpt
from gr2_sim.dataset import Normalizer
from gr2_sim.errors import UserError

KIND = "idm"


@dataclass
class IDMConfig:
    """Sizes of the inverse-dynamics CNN."""

    img_size: int = 64  # square input frames; a multiple of 16 (four stride-2 convs)
    action_dim: int = 7  # size of a_t
    state_dim: int = 0  # robot-state size fed to the MLP; 0 = frames only
    channels: tuple[int, ...] = (32, 64, 128, 128)  # conv widths, each conv halves the resolution
    hidden: int = 256  # MLP hidden width
    # the state after the step too: (o_t, o_t+1, s_t, s_t+1) -> a_t. For labelling recorded robot video
    # (`gr2-sim label`), where every frame's state is logged and the arm's displacement says most of the action;
    # the `idm` readout of generated frames has no such state and refuses such a model
    next_state: bool = False
    # with next_state, the products of each state value with each one's change, s_t (x) (s_t+1 - s_t), join the
    # head's inputs: a rotation logged as a quaternion turns by an amount that is a product of the two (for a
    # turn about z, d_yaw ~ 2 (w dz - z dw)), which a linear layer then reads directly (held-out action MSE on
    # 200 Push demos at step 1500: 0.0049 with them, 0.019 without; docs/data.md). Configs saved before this
    # field load without them
    state_products: bool = True

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("img_size", "action_dim", "hidden"):
            if getattr(self, name) < 1:
                raise UserError(f"IDMConfig.{name}={getattr(self, name)!r} must be >= 1")
        if self.state_dim < 0:
            raise UserError(f"IDMConfig.state_dim={self.state_dim!r} must be >= 0 (0 = no state)")
        if not isinstance(self.next_state, bool) or (self.next_state and not self.state_dim):
            raise UserError(f"IDMConfig.next_state={self.next_state!r} must be true or false, and true needs a state "
                            f"(state_dim > 0, got {self.state_dim}): data recorded with states, without --no-state")
        if not self.channels or self.img_size % 2 ** len(self.channels):
            raise UserError(f"IDMConfig.img_size={self.img_size} must be divisible by 2**{len(self.channels)} "
                            f"(one halving per conv in channels={self.channels})")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], saved: bool = True) -> IDMConfig:
        """The config of ``data``: a saved config.json's (``saved``: fields added since load as the behaviour it
        was trained with), or new fields (e.g. ``--set`` overrides; missing ones take their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            raise UserError(f"unknown IDMConfig field(s) {sorted(set(data) - known)}; valid: {sorted(known)}")
        if saved:
            data = {"state_products": False, **data}
        return cls(**data)


class InverseDynamicsModel(nn.Module):
    """(frame_t, frame_t+1[, state]) -> normalised a_t. See the module docstring."""

    def __init__(self, config: IDMConfig) -> None:
        super().__init__()
        self.config = cfg = config
        layers: list[nn.Module] = []
        width = 6
        for out in cfg.channels:
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.GroupNorm(8 if out % 8 == 0 else 1, out),
                       nn.SiLU()]
            width = out
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(width + self.state_features, cfg.hidden), nn.SiLU(),
                                  nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.action_dim))

    @property
    def state_features(self) -> int:
        """Head inputs beside the image features: s_t, and with next_state s_t+1 (and the products)."""
        cfg = self.config
        if not cfg.next_state:
            return cfg.state_dim
        return 2 * cfg.state_dim + (cfg.state_dim ** 2 if cfg.state_products else 0)

    def forward(self, frame_t: torch.Tensor, frame_next: torch.Tensor,
                state: torch.Tensor | None = None, state_next: torch.Tensor | None = None) -> torch.Tensor:
        """frame_t, frame_next: (B, 3, H, W) in [-1, 1]; state (and, with ``next_state``, state_next, the state
        at frame_next): (B, state_dim) normalised -> a_t (B, A)."""
        cfg = self.config
        if frame_t.shape != frame_next.shape or tuple(frame_t.shape[1:]) != (3, cfg.img_size, cfg.img_size):
            raise UserError(f"IDM frames must both be (B, 3, {cfg.img_size}, {cfg.img_size}), "
                            f"got {tuple(frame_t.shape)} and {tuple(frame_next.shape)}")
        features = self.encoder(torch.cat([frame_t, frame_next], dim=1)).mean(dim=(2, 3))  # (B, C)
        if cfg.state_dim:
            if state is None or state.shape[-1] != cfg.state_dim:
                got = None if state is None else tuple(state.shape)
                raise UserError(f"this IDM needs a (B, {cfg.state_dim}) state, got {got}")
            features = torch.cat([features, state], dim=1)  # (B, C + S)
        if cfg.next_state:
            if state_next is None or state_next.shape != state.shape:
                got = None if state_next is None else tuple(state_next.shape)
                raise UserError(f"this IDM (next_state) needs the state after the step too, (B, {cfg.state_dim}); "
                                f"got {got}")
            features = torch.cat([features, state_next], dim=1)  # (B, C + 2S)
            if cfg.state_products:
                products = state.unsqueeze(2) * (state_next - state).unsqueeze(1)  # (B, S, S)
                features = torch.cat([features, products.flatten(1)], dim=1)  # (B, C + 2S + S^2)
        return self.head(features)  # (B, A)

    def chunk_actions(self, cond: torch.Tensor, future: torch.Tensor, state: torch.Tensor | None = None,
                      future_state: torch.Tensor | None = None) -> torch.Tensor:
        """Actions along a frame sequence: (cond, future_0), (future_0, future_1), ...

        cond: (B, 3, H, W); future: (B, T, 3, H, W); state: (B, S) at ``cond`` -> (B, T, A) normalised. Every
        pair reads the state at ``cond``; with ``next_state``, each pair reads its own two states, from
        future_state (B, T, S), the states at the future frames.
        """
        B, T = future.shape[:2]
        frames = torch.cat([cond.unsqueeze(1), future], dim=1)  # (B, T+1, 3, H, W)
        before, after = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)  # (B*T, 3, H, W)
        if self.config.next_state:
            if future_state is None:
                raise UserError("this IDM (next_state) needs the states of the future frames (future_state)")
            states = torch.cat([state.unsqueeze(1), future_state], dim=1)  # (B, T+1, S)
            return self.forward(before, after, states[:, :-1].flatten(0, 1), states[:, 1:].flatten(0, 1)).reshape(B, T, -1)
        pair_state = state.repeat_interleave(T, dim=0) if (state is not None and self.config.state_dim) else None
        return self.forward(before, after, pair_state).reshape(B, T, -1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MSE on every consecutive pair of a training window (``WindowSampler.sample`` with stride 1).

        batch: cond (B, 3, H, W), future (B, T, 3, H, W), actions (B, T, A) normalised, optional state (B, S).
        Pair k is (o_t+k, o_t+k+1) -> a_t+k. Returns ``{"loss", "action_loss"}`` (equal: the only term).
        """
        if "actions" not in batch:
            raise UserError("the inverse-dynamics model trains on demonstrations: the batch has no actions")
        pred = self.chunk_actions(batch["cond"], batch["future"], batch.get("state"), batch.get("future_state"))
        action_loss = F.mse_loss(pred, batch["actions"])
        return {"loss": action_loss, "action_loss": action_loss}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar training loss of ``compute_loss``."""
        return self.compute_loss(batch)["loss"]


# ------------------------------------------------------------------------------------------ run folders
def is_idm_run(config: dict[str, Any]) -> bool:
    """Whether a run's ``config.json`` dict describes an inverse-dynamics run (kind or stage ``idm``)."""
    return config.get("kind") == KIND or config.get("stage") == KIND


def idm_run_config(config: IDMConfig, **extra: Any) -> dict[str, Any]:
    """The ``config.json`` dict of an IDM run: ``{"kind": "idm", "model": {...}, **extra}``."""
    return {"kind": KIND, "model": config.to_dict(), **extra}


def save_idm_run(run: str | Path, model: InverseDynamicsModel, ema: InverseDynamicsModel,
                 normalizer: Normalizer | None, step: int, **extra: Any) -> Path:
    """Write config.json, normalizer.json and model.safetensors ("model." and "ema." weights), atomically."""
    run = Path(run)
    if ema is model:  # safetensors refuses two names for one tensor
        ema = copy.deepcopy(model)
    ckpt.save_run_files(run, idm_run_config(model.config, **extra), normalizer)
    ckpt.save_weights(run, model, ema, step)
    return run


def load_idm(run: str | Path, which: str = "ema") -> tuple[InverseDynamicsModel, Normalizer]:
    """The IDM of a run folder (EMA weights by default, in eval mode) and its action normaliser."""
    config = ckpt.load_config(run)
    if not is_idm_run(config):
        raise UserError(f"{run} is not an inverse-dynamics run (config.json kind={config.get('kind')!r}, "
                        f"stage={config.get('stage')!r}); train one with `gr2-sim train --stage idm`")
    model = InverseDynamicsModel(IDMConfig.from_dict(config["model"]))
    try:
        model.load_state_dict(ckpt.load_weights(run, which))
    except RuntimeError as err:
        raise UserError(f"{run}: the weights do not match its config.json ({str(err).splitlines()[0]})") from None
    normalizer = ckpt.load_normalizer(run)
    if normalizer is None:
        raise UserError(f"run folder {run} is incomplete: missing {ckpt.NORMALIZER} (the action normaliser)")
    return model.eval(), normalizer
