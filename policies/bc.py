"""Plain image behaviour cloning: the baseline every video-pretraining result is measured against.

The Diffusion Policy / robomimic family made small for a CPU (Levine et al. 2016's spatial softmax, FiLM of
Perez et al. 2018, DrQ's random shift in the objective). One frame, the instruction and the robot state in,
a chunk of ``horizon`` normalised actions out, MSE on the demonstrations::

    frame (B, 3, 64, 64) in [-1, 1]
      -> conv3x3 s2  3->16  GroupNorm FiLM SiLU      (B, 16, 32, 32)
      -> conv3x3 s1 16->16  GroupNorm FiLM SiLU      (B, 16, 32, 32)
      -> conv3x3 s2 16->32  GroupNorm FiLM SiLU      (B, 32, 16, 16)
      -> conv3x3 s1 32->32  GroupNorm FiLM SiLU      (B, 32, 16, 16)
      -> spatial softmax: per channel the expected (x, y) under softmax(feature map)   (B, 64)
    instruction tokens (B, L) -> mean of word embeddings (bag of words) (B, E) -> FiLM (gamma, beta) per conv
    [keypoints, state (B, S)] -> Linear -> SiLU -> Linear -> actions (B, horizon, A)

FiLM starts as the identity (zero-initialised projections): ``x * (1 + gamma) + beta``.

Run folders use the DiT's layout (:mod:`gr2_sim.checkpoint`): ``config.json`` = ``{"kind": "bc", "model": {..},
"train": {..}, ...}``, ``model.safetensors`` with "ema." / "model." weights, ``normalizer.json``. Train one with
``gr2-sim train --stage bc``; ``gr2-sim eval --ckpt RUN`` rolls it out as a :class:`BCPolicy`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium import spaces

from gr2_sim import checkpoint as ckpt
from gr2_sim.dataset import Normalizer, frames_to_tensor
from gr2_sim.errors import UserError
from gr2_sim.model import mlp, spatial_softmax
from gr2_sim.text import DEFAULT_VOCAB_SIZE, PAD_ID, tokenize
from policies.base import CheckpointPolicy

KIND = "bc"


@dataclass
class BCConfig:
    """Sizes of the image-BC policy."""

    img_size: int = 64  # square input frames; divisible by the product of the strides
    action_dim: int = 7  # size of one action
    state_dim: int = 0  # robot-state size fed to the MLP; 0 = frame and instruction only
    horizon: int = 4  # actions predicted per query (the chunk)
    channels: tuple[int, ...] = (16, 16, 32, 32)  # 3x3 conv widths
    strides: tuple[int, ...] = (2, 1, 2, 1)  # one per conv
    lang_dim: int = 64  # word-embedding size of the bag-of-words instruction
    vocab_size: int = DEFAULT_VOCAB_SIZE  # hashed word buckets (gr2_sim.text)
    max_text_len: int = 16  # instruction words read
    hidden: int = 256  # MLP hidden width
    head_layers: int = 1  # hidden layers of the MLP (1 = Linear-SiLU-Linear)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strides = tuple(int(s) for s in self.strides)
        for name in ("img_size", "action_dim", "horizon", "lang_dim", "max_text_len", "hidden", "head_layers"):
            if getattr(self, name) < 1:
                raise UserError(f"BCConfig.{name}={getattr(self, name)!r} must be >= 1")
        if self.state_dim < 0:
            raise UserError(f"BCConfig.state_dim={self.state_dim!r} must be >= 0 (0 = no state)")
        if self.vocab_size < 2:
            raise UserError(f"BCConfig.vocab_size={self.vocab_size!r} must be >= 2 (id 0 is padding)")
        if not self.channels or len(self.strides) != len(self.channels) or min(self.strides) < 1:
            raise UserError(f"BCConfig.strides={self.strides} must give one stride >= 1 per conv in "
                            f"channels={self.channels}")
        if self.img_size % int(np.prod(self.strides)):
            raise UserError(f"BCConfig.img_size={self.img_size} must be divisible by the product of the strides "
                            f"{self.strides} ({int(np.prod(self.strides))})")

    @property
    def feature_side(self) -> int:
        """Side of the last feature map."""
        return self.img_size // int(np.prod(self.strides))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "channels": list(self.channels), "strides": list(self.strides)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BCConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        if set(data) - known:
            raise UserError(f"unknown BCConfig field(s) {sorted(set(data) - known)}; valid: {sorted(known)}")
        return cls(**data)


class BCModel(nn.Module):
    """(frame, instruction tokens[, state]) -> normalised action chunk. See the module docstring."""

    def __init__(self, config: BCConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.word_embed = nn.Embedding(cfg.vocab_size, cfg.lang_dim, padding_idx=PAD_ID)
        self.convs, self.norms, self.films = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        width = 3
        for out, stride in zip(cfg.channels, cfg.strides, strict=True):
            self.convs.append(nn.Conv2d(width, out, 3, stride=stride, padding=1))
            self.norms.append(nn.GroupNorm(8 if out % 8 == 0 else 1, out))
            film = nn.Linear(cfg.lang_dim, 2 * out)
            nn.init.zeros_(film.weight)  # FiLM starts as the identity
            nn.init.zeros_(film.bias)
            self.films.append(film)
            width = out
        self.head = mlp(2 * width + cfg.state_dim, cfg.hidden, cfg.horizon * cfg.action_dim, cfg.head_layers, nn.SiLU)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids (B, max_text_len) in this model's vocabulary."""
        return tokenize(texts, self.config.max_text_len, self.config.vocab_size).to(self.word_embed.weight.device)

    def instruction_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, lang_dim): the mean of the word embeddings (zeros for the empty instruction)."""
        keep = (tokens != PAD_ID).unsqueeze(-1).float()  # (B, L, 1)
        return (self.word_embed(tokens) * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """image (B, 3, S, S) in [-1, 1]; tokens (B, L) long; state (B, state_dim) normalised -> (B, T, A)."""
        cfg = self.config
        if image.dim() != 4 or tuple(image.shape[1:]) != (3, cfg.img_size, cfg.img_size):
            raise UserError(f"BC frames must be (B, 3, {cfg.img_size}, {cfg.img_size}), got {tuple(image.shape)}")
        if tokens.dim() != 2 or tokens.shape[0] != image.shape[0]:
            raise UserError(f"BC instruction tokens must be (B={image.shape[0]}, L), got {tuple(tokens.shape)}")
        lang = self.instruction_embedding(tokens)  # (B, E)
        x = image
        for conv, norm, film in zip(self.convs, self.norms, self.films, strict=True):
            gamma, beta = film(lang)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
            x = F.silu(norm(conv(x)) * (1 + gamma) + beta)
        features = spatial_softmax(x)  # (B, 2C)
        if cfg.state_dim:
            if state is None or tuple(state.shape) != (image.shape[0], cfg.state_dim):
                got = None if state is None else tuple(state.shape)
                raise UserError(f"this BC policy needs a (B, {cfg.state_dim}) state, got {got}")
            features = torch.cat([features, state], dim=1)  # (B, 2C + S)
        return self.head(features).reshape(-1, cfg.horizon, cfg.action_dim)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """MSE between the predicted chunk and the normalised demonstration actions a_t .. a_t+T-1.

        batch: cond (B, 3, H, W), text (B, L), actions (B, T, A) normalised, optional state (B, S).
        Returns ``{"loss", "action_loss"}`` (equal: the only term).
        """
        if "actions" not in batch:
            raise UserError("behaviour cloning trains on demonstrations: the batch has no actions")
        pred = self.forward(batch["cond"], batch["text"], batch.get("state"))
        action_loss = F.mse_loss(pred, batch["actions"])
        return {"loss": action_loss, "action_loss": action_loss}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> dict[str, int]:
        """Multiply-add FLOPs per sample (2*m*n*k per conv/matmul; norms, activations and lookups ignored).

        Keys: forward, train_step (= 3 x forward, as VideoActionDiT.estimate_flops counts it).
        """
        cfg = self.config
        mm = lambda m, k, n_: 2 * m * k * n_  # noqa: E731
        forward, side = 0, cfg.img_size
        for conv, film in zip(self.convs, self.films, strict=True):
            side //= conv.stride[0]
            forward += mm(side * side, conv.in_channels * 9, conv.out_channels) + mm(1, cfg.lang_dim, film.out_features)
        width = cfg.channels[-1]
        forward += mm(width, side * side, 2)  # the keypoint expectations
        forward += sum(mm(1, lin.in_features, lin.out_features) for lin in self.head if isinstance(lin, nn.Linear))
        return {"forward": forward, "train_step": 3 * forward}


# ------------------------------------------------------------------------------------------ run folders
def is_bc_run(config: dict[str, Any]) -> bool:
    """Whether a run's ``config.json`` dict describes an image-BC run."""
    return config.get("kind") == KIND or config.get("stage") == KIND


def load_bc(run: str | Path, which: str = "ema") -> tuple[BCModel, Normalizer]:
    """The BC model of a run folder (EMA weights by default, in eval mode) and its normaliser."""
    config = ckpt.load_config(run)
    if not is_bc_run(config):
        raise UserError(f"{run} is not an image-BC run (config.json kind={config.get('kind')!r}, "
                        f"stage={config.get('stage')!r}); train one with `gr2-sim train --stage bc`")
    model = BCModel(BCConfig.from_dict(config["model"]))
    try:
        model.load_state_dict(ckpt.load_weights(run, which))
    except RuntimeError as err:
        raise UserError(f"{run}: the weights do not match its config.json ({str(err).splitlines()[0]})") from None
    normalizer = ckpt.load_normalizer(run)
    if normalizer is None:
        raise UserError(f"run folder {run} is incomplete: missing {ckpt.NORMALIZER} (the action normaliser)")
    return model.eval(), normalizer


# ------------------------------------------------------------------------------------------ the policy
class BCPolicy(CheckpointPolicy):
    """A trained :class:`BCModel` (EMA weights) behind the action-queue contract of ``ChunkedPolicy``.

    Each query maps the current frame, the normalised state and the instruction (tokenized once in
    ``set_instruction``) to ``horizon`` actions, unnormalised and clipped to the env's Box action space.
    Deterministic: no sampling noise. It predicts no frames (``predict_chunk`` returns None for them).
    """

    def __init__(self, model: BCModel, normalizer: Normalizer, n_action_steps: int | None = None,
                 temporal_ensemble: float | None = None, action_space: spaces.Space | None = None,
                 name: str = "") -> None:
        cfg = model.config
        if n_action_steps is None:
            n_action_steps = 1 if temporal_ensemble is not None else cfg.horizon
        try:
            super().__init__(n_action_steps, cfg.horizon, temporal_ensemble)
        except ValueError as err:
            raise UserError(str(err)) from None
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.normalizer, self.name = normalizer, name
        self.image_size, self.action_dim, self.state_dim = cfg.img_size, cfg.action_dim, cfg.state_dim
        self.action_low = self.action_high = None
        if action_space is not None:
            self.set_action_space(action_space)
        self.instruction = ""
        self._tokens = model.tokenize([""])

    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, n_action_steps: int | None = None,
                        temporal_ensemble: float | None = None, device: str = "auto", env: Any = None,
                        num_threads: int | None = None) -> BCPolicy:
        """Load a ``--stage bc`` run folder's EMA weights and normaliser; ``env`` is checked and bounds actions."""
        from policies.gr2 import default_threads, resolve_device

        model, normalizer = load_bc(run_dir)
        torch_device = resolve_device(device)
        if torch_device.type == "cpu":
            torch.set_num_threads(num_threads or default_threads())
        policy = cls(model.to(torch_device), normalizer, n_action_steps, temporal_ensemble, name=str(run_dir))
        if env is not None:
            policy.attach_env(env)
        return policy

    def set_instruction(self, text: str) -> None:
        self.instruction = str(text)
        self._tokens = self.model.tokenize([self.instruction])

    @torch.inference_mode()
    def predict_chunk(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, None]:
        """actions (T, A) float32, unnormalised and clipped; no frames. ``obs`` is never written."""
        image = np.asarray(obs["image"])
        if image.shape != (self.image_size, self.image_size, 3) or image.dtype != np.uint8:
            raise UserError(f"obs['image'] must be ({self.image_size}, {self.image_size}, 3) uint8, "
                            f"got {image.shape} {image.dtype}")
        frame = frames_to_tensor(image[None].copy(), self.device)  # the copy: obs may be read-only
        state = None
        if self.state_dim:
            raw = np.asarray(obs["state"], np.float32).reshape(-1)
            if raw.shape != (self.state_dim,):
                raise UserError(f"obs['state'] must have {self.state_dim} values, got shape {raw.shape}")
            state = self.normalizer.normalize_states(torch.tensor(raw, device=self.device)[None])
        actions = self.normalizer.unnormalize_actions(self.model(frame, self._tokens, state)[0])
        actions = actions.float().cpu().numpy()
        actions = self.clip(actions)
        return actions.astype(np.float32), None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "type": "BCPolicy", "ckpt": self.name, "horizon": self.chunk_size,
                "params": self.model.num_params(), "device": str(self.device),
                "torch_threads": torch.get_num_threads()}
