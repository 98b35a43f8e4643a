"""DDPM noise schedule and training targets, and a DDIM sampler for the video + action DiT.

Training (the trainer owns the loop):
    t = diffusion.sample_t(B)                          # (B,) uniform in [0, K)
    noise = torch.randn_like(future)                   # (B, T, 3, H, W)
    x_t = diffusion.q_sample(future, t, noise)
    out = model(cond, x_t, t, tokens, state, target_noise=diffusion.training_targets(future, t, noise),
                target_actions=actions)
Sampling:
    frames, actions = diffusion.ddim_sample(model, cond, tokens, state, steps=10, generator=g)
    actions = diffusion.head_actions(model, cond, tokens, state, generator=g)   # one forward pass
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gr2_sim.config import ModelConfig
from gr2_sim.device import to_device
from gr2_sim.errors import UserError


def cosine_betas(K: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2(((t/K + s) / (1 + s)) * pi/2); betas clipped at 0.999."""
    steps = torch.arange(K + 1, dtype=torch.float64) / K
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def linear_betas(K: int) -> torch.Tensor:
    """Ho et al. (2020): betas linear from 1e-4 to 0.02 at K = 1000, rescaled so other K span the same noise."""
    scale = 1000 / K
    return torch.linspace(scale * 1e-4, scale * 0.02, K, dtype=torch.float64)


def ddim_timesteps(K: int, steps: int) -> list[int]:
    """``steps`` distinct noise levels of a K-level schedule, evenly spaced from K-1 (pure noise) down to 0."""
    if not 1 <= steps <= K:
        raise UserError(f"DDIM steps={steps} must be in [1, {K}] (the training diffusion_steps)")
    if steps == 1:
        return [K - 1]  # one jump from pure noise straight to the x0 estimate
    return [round((K - 1) * (1 - i / (steps - 1))) for i in range(steps)]


def _per_sample(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to (B, 1, 1, ...) so it broadcasts against ``like``."""
    return to_device(values, like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))  # no host sync


class Diffusion:
    """K-step Gaussian diffusion on future frames: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, a_t = alpha_bar[t]."""

    def __init__(self, config: ModelConfig) -> None:
        self.K = self.num_steps = config.diffusion_steps
        self.prediction = config.prediction
        betas = cosine_betas(self.K) if config.schedule == "cosine" else linear_betas(self.K)
        alpha_bar = torch.cumprod(1 - betas, dim=0)  # (K,) float64, from ~1 down to ~0
        self.betas = betas.float()
        self.alpha_bar = alpha_bar.float()
        self.sqrt_ab = alpha_bar.sqrt().float()
        self.sqrt_1m_ab = (1 - alpha_bar).sqrt().float()

    def sample_t(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training noise levels: (B,) long, uniform in [0, K)."""
        return torch.randint(0, self.K, (batch_size,), generator=generator, device=device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noised x_t for clean x0 (B, ...) at steps t (B,) with the given noise (B, ...)."""
        return _per_sample(self.sqrt_ab, t, x0) * x0 + _per_sample(self.sqrt_1m_ab, t, x0) * noise

    def training_targets(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the video head regresses: x0 (the clean frames), eps, or v = sqrt(a_t) eps - sqrt(1 - a_t) x0."""
        if self.prediction == "x0":
            return x0
        if self.prediction == "eps":
            return noise
        return _per_sample(self.sqrt_ab, t, x0) * noise - _per_sample(self.sqrt_1m_ab, t, x0) * x0

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``training_targets`` with the argument order train.py uses."""
        return self.training_targets(x0, t, noise)

    def predict_x0_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, model_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by the model's x0, eps or v prediction at x_t; x0 clamped to [-1, 1], eps consistent."""
        a, s = _per_sample(self.sqrt_ab, t, x_t), _per_sample(self.sqrt_1m_ab, t, x_t)
        if self.prediction == "x0":
            x0 = model_out
        elif self.prediction == "eps":
            x0 = (x_t - s * model_out) / a
        else:
            x0 = a * x_t - s * model_out
        x0 = x0.clamp(-1, 1)
        return x0, (x_t - a * x0) / s

    def ddim_timesteps(self, steps: int) -> list[int]:
        """``steps`` distinct noise levels, evenly spaced from K-1 (pure noise) down to 0."""
        return ddim_timesteps(self.K, steps)

    def _noise(self, model: nn.Module, cond_frame: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        cfg = model.config
        shape = (cond_frame.shape[0], cfg.n_future, 3, cfg.img_size, cfg.img_size)
        return torch.randn(shape, generator=generator, device=cond_frame.device, dtype=cond_frame.dtype)

    @torch.no_grad()
    def ddim_sample(
        self,
        model: nn.Module,
        cond_frame: torch.Tensor,
        text_tokens: torch.Tensor,
        state: torch.Tensor | None = None,
        steps: int = 10,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        return_actions: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Denoise T future frames from pure noise with DDIM (Song et al. 2021) in ``steps`` model calls.

        cond_frame: (B, 3, H, W) in [-1, 1]; text_tokens: (B, L); state: (B, state_dim) or None.
        eta = 0 is deterministic given the starting noise; eta = 1 is DDPM-like. All noise is drawn from
        ``generator``, so a seeded generator gives the same frames every time.
        Returns frames (B, T, 3, H, W) clamped to [-1, 1] and, if ``return_actions``, the action head's
        output (B, T, action_dim) at the final (least noisy) step, else None.
        """
        x = self._noise(model, cond_frame, generator)  # (B, T, 3, H, W)
        ts = self.ddim_timesteps(steps)
        actions = None
        # the conditioning frame's encodings are the same at every step: computed once where the model can cache
        extra = {"cond_cache": {}} if getattr(model, "supports_cond_cache", False) else {}
        for i, t_now in enumerate(ts):
            t = torch.full((x.shape[0],), t_now, dtype=torch.long, device=x.device)
            out = model(cond_frame, x, t, text_tokens, state, **extra)
            x0, eps = self.predict_x0_eps(x, t, out["video_pred"])
            actions = out["actions"]
            ab_prev = self.alpha_bar[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
            ab = self.alpha_bar[t_now].item()
            sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x.clamp(-1, 1), (actions if return_actions else None)

    @torch.no_grad()
    def head_actions(
        self,
        model: nn.Module,
        cond_frame: torch.Tensor,
        text_tokens: torch.Tensor,
        state: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The fast readout: one forward pass from pure-noise futures at t = K-1; actions (B, T, action_dim).
        A model whose head reads only the keypoints and the state skips the transformer (the same actions)."""
        if getattr(model, "reads_keypoints_only", False):
            return model.keypoint_actions(cond_frame, text_tokens, state, generator=generator).actions
        x = self._noise(model, cond_frame, generator)
        t = torch.full((x.shape[0],), self.K - 1, dtype=torch.long, device=x.device)
        return model(cond_frame, x, t, text_tokens, state, need_video=False)["actions"]
