"""The lesson's straightforward video + action DiT, written cleanly: the baseline for benchmarks.

Differences from ``gr2_sim.model.VideoActionDiT`` (which is what we train):
    - plain AdaLayerNorm (scale/shift, no gates, not zero-initialised): blocks are not the identity at init;
    - ``nn.MultiheadAttention`` instead of a fused-qkv ``scaled_dot_product_attention``;
    - one learned positional embedding over all (T+1)*N tokens instead of a space + time factorisation;
    - timestep through Linear(1, .) on t / K (the lesson feeds raw t; scaling to [0, 1) keeps it well-conditioned);
    - conditioning merged by a Linear over [time, language (, state)] rather than summed.
Sizes, inputs and outputs are the same (``forward`` has the same signature and returns the same ``ModelOutput``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gr2_sim.config import ModelConfig
from gr2_sim.model import ModelOutput, patchify, unpatchify
from gr2_sim.text import TextEncoder


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift come from the conditioning vector: x: (B, N, D), cond: (B, C)."""

    def __init__(self, d_model: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * d_model))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(cond).unsqueeze(1).chunk(2, dim=-1)  # each (B, 1, D)
        return self.norm(x) * (1 + scale) + shift


class ReferenceBlock(nn.Module):
    """AdaLN -> self-attention -> residual; AdaLN -> FFN -> residual."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, cond_dim: int) -> None:
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.norm1 = AdaLayerNorm(d_model, cond_dim)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.norm2 = AdaLayerNorm(d_model, cond_dim)
        self.ffn = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, return_attention: bool = False):
        """x: (B, N, D), cond: (B, C) -> (B, N, D) [, attention (B, heads, N, N)]."""
        h = self.norm1(x, cond)
        attn_out, attn = self.attn(h, h, h, need_weights=return_attention, average_attn_weights=False)
        x = x + attn_out
        x = x + self.ffn(self.norm2(x, cond))
        return (x, attn) if return_attention else x


class ReferenceDiT(nn.Module):
    """The lesson's VideoActionDiT at ``config`` sizes; same forward contract as ``VideoActionDiT``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = cfg = config
        D = cond_dim = cfg.d_model
        self.patch_embed = nn.Linear(3 * cfg.patch_size**2, D)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.n_tokens, D) * 0.02)
        self.time_embed = nn.Sequential(nn.Linear(1, 128), nn.SiLU(), nn.Linear(128, cond_dim))
        self.text_encoder = TextEncoder(cfg.vocab_size, cfg.lang_dim, cfg.max_text_len, cfg.text_layers, cfg.text_bigrams)
        self.lang_embed = nn.Linear(cfg.lang_dim, cond_dim)
        self.state_embed = nn.Linear(cfg.state_dim, cond_dim) if cfg.state_dim else None
        n_parts = 3 if cfg.state_dim else 2
        self.cond_merge = nn.Linear(n_parts * cond_dim, cond_dim)
        self.blocks = nn.ModuleList(
            ReferenceBlock(D, cfg.n_heads, cfg.mlp_ratio, cond_dim) for _ in range(cfg.n_layers)
        )
        self.video_head = nn.Linear(D, 3 * cfg.patch_size**2)
        self.action_head = nn.Sequential(
            nn.Linear(D, cfg.action_hidden), nn.ReLU(), nn.Linear(cfg.action_hidden, cfg.action_dim)
        )

    def num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        cond_frame: torch.Tensor,
        noisy_future: torch.Tensor,
        t: torch.Tensor,
        text_tokens: torch.Tensor,
        state: torch.Tensor | None = None,
        target_noise: torch.Tensor | None = None,
        target_actions: torch.Tensor | None = None,
        action_weight: float = 1.0,
        text_dropout: float = 0.0,
        return_attention: bool = False,
    ) -> ModelOutput:
        """Same arguments and outputs as ``VideoActionDiT.forward``: video_pred (B, T, 3, H, W), actions (B, T, A)."""
        cfg, n = self.config, self.config.patches_per_frame
        frames = torch.cat([cond_frame.unsqueeze(1), noisy_future], dim=1)  # (B, T+1, 3, H, W)
        x = self.patch_embed(patchify(frames, cfg.patch_size)) + self.pos_embed  # (B, (T+1)*n, D)

        parts = [
            self.time_embed((t.float() / cfg.diffusion_steps).unsqueeze(1)),
            self.lang_embed(self.text_encoder(text_tokens, text_dropout)),
        ]
        if self.state_embed is not None:
            parts.append(self.state_embed(state))
        cond = self.cond_merge(torch.cat(parts, dim=-1))  # (B, D)

        attention = [] if return_attention else None
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, cond, return_attention=True)
                attention.append(attn)
            else:
                x = block(x, cond)

        future = x[:, n:]  # (B, T*n, D)
        video_pred = unpatchify(self.video_head(future), cfg.n_future, cfg.img_size, cfg.patch_size)
        per_frame = future.reshape(x.shape[0], cfg.n_future, n, cfg.d_model).mean(dim=2)  # (B, T, D)
        actions = self.action_head(per_frame)  # (B, T, action_dim)

        video_loss = action_loss = loss = None
        if target_noise is not None:
            video_loss = loss = F.mse_loss(video_pred, target_noise)
        if target_actions is not None:
            action_loss = F.mse_loss(actions, target_actions)
            loss = action_weight * action_loss if loss is None else loss + action_weight * action_loss
        return ModelOutput(
            video_pred=video_pred, actions=actions, video_loss=video_loss, action_loss=action_loss, loss=loss,
            attention=attention,
        )  # fmt: skip
