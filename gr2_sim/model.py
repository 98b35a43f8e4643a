"""GR-2-style video + action diffusion transformer (DiT with adaLN-Zero), top to bottom.

One sample is the clean conditioning frame v_0 and T noisy future frames v_{1:T}^{(k)}; every frame is cut into
p x p patches, giving (T + 1) * (img/p)^2 spatiotemporal tokens that attend to each other in every block.
Each block is conditioned (adaLN-Zero) on c = timestep embedding + instruction embedding (+ state embedding).

    v_0 ──conv stem (FiLM by the instruction)──────────────────────────> N tokens ┐
    [v_k noisy | v_0] stacked per pixel ──p x p patches──linear──> T*N tokens ────┤ DiT blocks (adaLN-Zero)
                                                                                  │
    video head:  future tokens -> pixels -> x0 = v_0 + change            (B, T, 3, H, W)
    action head: [pooled future tokens | keypoints(v_0) | state] -> MLP  (B, T, action_dim)
                  keypoints: conv encoder (stride 4, FiLM) -> spatial softmax -> K (x, y)

The lesson's model is the preset ``lesson``: the same file with every frame a linear patch embedding
(``cond_stem="linear"``, ``future_input="noisy"``), noise prediction, mean pooling and no keypoints.

Layout follows facebookresearch/DiT: helpers, embedders, attention, block, final layer, model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gr2_sim.config import ModelConfig
from gr2_sim.diffusion import cosine_betas, ddim_timesteps
from gr2_sim.errors import UserError
from gr2_sim.text import TextEncoder

# ----------------------------------------------------------------------------------------------------------
# Helpers


class ModelOutput(dict):
    """Model outputs as a dict with attribute access (``out["loss"] is out.loss``); absent terms are None.

    Keys: video_pred (B, T, 3, H, W), actions (B, T, action_dim), video_loss, action_loss, loss (scalars or
    None), attention (list of (B, heads, N, N) per layer, or None).
    """

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


ACTION_T_FEATURES = 32  # sin-cos features of the action denoiser's noise level (action_diffusion > 0)
ACTION_CLAMP = 5.0  # the denoiser's clean-chunk estimate, in normalised units (std 1 over the demos), is clamped here


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (B, N, D); shift, scale: (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), dim) fixed sin-cos embedding; dim must be even."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
    """(grid_size**2, dim) fixed 2-D sin-cos embedding, row-major: half the channels for rows, half for columns."""
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], axis=1)


def patchify(frames: torch.Tensor, p: int) -> torch.Tensor:
    """(B, F, C, H, W) -> (B, F * (H/p) * (W/p), C*p*p), frame-major then row-major patches."""
    B, Fr, C, H, W = frames.shape
    x = frames.reshape(B, Fr, C, H // p, p, W // p, p)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)  # (B, F, H/p, W/p, C, p, p)
    return x.reshape(B, Fr * (H // p) * (W // p), C * p * p)


def unpatchify(tokens: torch.Tensor, n_frames: int, img_size: int, p: int, channels: int = 3) -> torch.Tensor:
    """(B, F * (img/p)^2, C*p*p) -> (B, F, C, img, img); the inverse of ``patchify``."""
    B, g = tokens.shape[0], img_size // p
    x = tokens.reshape(B, n_frames, g, g, channels, p, p)
    x = x.permute(0, 1, 4, 2, 5, 3, 6)  # (B, F, C, g, p, g, p)
    return x.reshape(B, n_frames, channels, img_size, img_size)


# ----------------------------------------------------------------------------------------------------------
# Embedders


def mlp(fan_in: int, hidden: int, out: int, layers: int = 1, act: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """``layers`` hidden Linear-activation pairs of width ``hidden``, then a Linear to ``out`` (the action heads of
    the DiT and the image BC; the parameter names are those of the one-layer ``Sequential`` they replaced)."""
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(fan_in, hidden), act()]
        fan_in = hidden
    return nn.Sequential(*mods, nn.Linear(fan_in, out))


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Diffusion steps t (B,) -> (B, dim) sin-cos features (cosines, then sines; periods up to max_period)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class TimestepEmbedder(nn.Module):
    """Diffusion step t (B,) long -> (B, D): sin-cos features then a 2-layer MLP (as in DiT)."""

    def __init__(self, d_model: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))  # (B, D)


# ----------------------------------------------------------------------------------------------------------
# Attention and the DiT block


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    The default path is ``F.scaled_dot_product_attention`` (fused, never materialises the N x N map).
    ``return_attention=True`` takes the explicit softmax(QK^T / sqrt(d)) V path and returns the map too.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    @staticmethod
    def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k, v: (B, h, N, d) -> output (B, h, N, d) and attention (B, h, N, N), rows summing to 1."""
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return attn @ v, attn

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, h, N, d)
        attn = None
        if return_attention:
            out, attn = self.explicit(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)
        return (out, attn) if return_attention else out


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: c sets shift/scale/gate of both sub-layers.

    The modulation layer is zero-initialised, so gates are 0 and the block is the identity at init.
    """

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(d_model * mlp_ratio)
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 6 * d_model))

    def forward(self, x: torch.Tensor, c: torch.Tensor, return_attention: bool = False):
        """x: (B, N, D), c: (B, D) -> (B, N, D), plus the attention map (B, h, N, N) if requested."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        attn_out = self.attn(modulate(self.norm1(x), shift_a, scale_a), return_attention)
        attn_map = None
        if return_attention:
            attn_out, attn_map = attn_out
        x = x + gate_a.unsqueeze(1) * attn_out
        x = x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))
        return (x, attn_map) if return_attention else x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm + linear to ``out_dim`` values per token (a patch's pixels, or the conv video
    head's features); zero-initialised, so predictions start at 0."""

    def __init__(self, d_model: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(d_model, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 2 * d_model))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, N, 3*p*p)


class ConvStem(nn.Module):
    """Map (B, C_in, h, w) -> (B, (h/s)^2, D) tokens by log2(s) stride-2 3x3 convolutions (widths ``width``,
    2 * ``width``, ... up to D; a 1x1 convolution when s = 1): the same token grid as an s x s patch embedding.

    Two uses: the frame itself (``cond_stem="conv"``: C_in = 3, s = the patch size, widths from 32), and the
    keypoint encoder's stride-4 map (``cond_stem="trunk"``: C_in = its channels, s = patch size / 4), so one
    convolutional trunk serves both halves and the video loss shapes the features the keypoints are read from.

    Between the convolutions: GroupNorm, then (with ``lang_dim``) FiLM by the instruction embedding (per-channel
    scale and shift, as in RT-1's FiLM-conditioned image encoder: "the red cube" can pick the red channels
    before anything is pooled; zero-initialised, the identity), then GELU.
    """

    def __init__(self, in_channels: int, d_model: int, stride: int, width: int, lang_dim: int | None = None) -> None:
        super().__init__()
        n = stride.bit_length() - 1
        widths = [in_channels] + [min(d_model, width * 2**i) for i in range(n - 1)] + [d_model]
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(n))
        hidden = widths[1:-1]
        self.norms = nn.ModuleList(nn.GroupNorm(8 if w % 8 == 0 else 1, w) for w in hidden)
        self.films = nn.ModuleList(nn.Linear(lang_dim, 2 * w) for w in hidden) if lang_dim else nn.ModuleList()
        if n == 0:
            self.convs = nn.ModuleList([nn.Conv2d(in_channels, d_model, 1)])

    def forward(self, x: torch.Tensor, lang: torch.Tensor | None = None) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.norms):
                x = self.norms[i](x)
                if self.films:
                    scale, shift = self.films[i](lang)[:, :, None, None].chunk(2, dim=1)
                    x = x * (1 + scale) + shift
                x = F.gelu(x)
        return x.flatten(2).transpose(1, 2)  # (B, n, D), row-major like patchify


class KeypointEncoder(nn.Module):
    """Frame (B, 3, H, W) + instruction (B, E) -> K image keypoints (B, 2K): the encoder of a plain image
    policy (robomimic, Diffusion Policy) made small. Four 3x3 convolutions, GroupNorm, FiLM by the instruction
    (so a map can respond to "the red cube" only; zero-initialised, the identity); then
    :class:`SpatialSoftmax` on the (H/4, W/4) map: a 64x64 frame keeps a 16x16 map, where a 6-pixel cube is
    still 1-2 cells wide. Two layouts (ModelConfig.keypoint_layout):

    - "dit": ``channels`` wide throughout, strides 1, 2, 1, 2 (the first convolution at full resolution),
      GELU; K learned 1x1 maps with a learned temperature;
    - "bc": the image BC's encoder (policies/bc.py): widths C/2, C/2, C, C, strides 2, 1, 2, 1, SiLU; one
      keypoint per channel of the last map (K = C).
    """

    LAYOUTS = {"dit": ((1, 2, 1, 2), (1, 1, 1, 1)), "bc": ((2, 1, 2, 1), (0.5, 0.5, 1, 1))}  # strides, widths

    def __init__(self, lang_dim: int, channels: int, keypoints: int, layout: str = "dit") -> None:
        super().__init__()
        strides, fractions = self.LAYOUTS[layout]
        widths = [3] + [int(channels * f) for f in fractions]
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, stride=s, padding=1)
                                   for i, s in enumerate(strides))
        self.norms = nn.ModuleList(nn.GroupNorm(8 if w % 8 == 0 else 1, w) for w in widths[1:])
        self.films = nn.ModuleList(nn.Linear(lang_dim, 2 * w) for w in widths[1:])
        self.act = F.silu if layout == "bc" else F.gelu
        self.softmax = SpatialSoftmax(channels, keypoints, learned_maps=layout != "bc")

    def features(self, frame: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        """The (B, C, H/4, W/4) feature map the keypoints are read from."""
        x = frame
        for conv, norm, film in zip(self.convs, self.norms, self.films, strict=True):
            scale, shift = film(lang)[:, :, None, None].chunk(2, dim=1)
            x = self.act(norm(conv(x)) * (1 + scale) + shift)  # (B, C, h, w)
        return x

    def forward(self, frame: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.features(frame, lang))  # (B, 2K) in [-1, 1]


class SpatialSoftmax(nn.Module):
    """Feature map (B, C, h, w) -> K keypoints (B, 2K): K maps, a softmax over the pixels of each, and the
    expected (x, y) in [-1, 1] under it (Levine et al. 2016, "End-to-end training of deep visuomotor
    policies"). Sub-pixel positions, whatever the token grid; the instruction FiLM of the stem lets a map
    respond to "the red cube" only. ``learned_maps``: the maps are a 1x1 convolution of the features with a
    learned temperature; False: each channel is a map (K = C), temperature 1, as in the image BC."""

    def __init__(self, channels: int, keypoints: int, learned_maps: bool = True) -> None:
        super().__init__()
        if learned_maps:
            self.to_maps = nn.Conv2d(channels, keypoints, 1)
            self.log_temperature = nn.Parameter(torch.zeros(()))
        else:
            if keypoints != channels:
                raise UserError(f"one keypoint per channel needs keypoints == channels, got {keypoints} and {channels}")
            self.to_maps = nn.Identity()
            self.register_buffer("log_temperature", torch.zeros(()), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return spatial_softmax(self.to_maps(features) / self.log_temperature.exp())  # (B, 2K)


def spatial_softmax(maps: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) -> (B, 2K): per map the expected (x, y) in [-1, 1] under a softmax over its H*W cells
    (the DiT's keypoints and the image BC's)."""
    B, K, H, W = maps.shape
    probs = maps.flatten(2).softmax(dim=-1)  # (B, K, H*W)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H, device=maps.device),
                            torch.linspace(-1, 1, W, device=maps.device), indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1).to(maps.dtype)  # (H*W, 2)
    return (probs @ grid).flatten(1)  # (B, 2K): x0, y0, x1, y1, ...


class ConvVideoHead(nn.Module):
    """The "conv" video head: future-frame token states -> the change of each future frame, at full resolution.

    A linear head must draw a 16x16x3 patch from one 128-wide token: it cannot move a 6-pixel cube by two
    pixels. This head works on a stride-4 grid instead (16x16 for a 64x64 frame), the resolution of the keypoint
    encoder's map, as a U-Net's last stage does: per future frame it stacks
      - the token states, each spread over its (p/4)^2 cells (``width`` channels per cell, from the FinalLayer),
      - the conditioning frame's trunk features (the keypoint encoder's map: a skip connection, so the video
        loss trains the features the policy reads its keypoints from),
      - the conditioning frame and the noisy future frame, each 4x4 pixel block folded into 48 channels
        (pixel unshuffle: nothing is lost),
    mixes them with a 1x1 and two 3x3 convolutions (GroupNorm, GELU) and unfolds 48 channels per cell back into
    4x4 pixel blocks. The last convolution starts at zero, so with the residual the prediction starts as "copy".
    """

    FOLD = 4  # pixels per cell side: the keypoint map's stride
    FOLDED = 3 * FOLD**2  # an RGB cell's pixels as channels

    def __init__(self, trunk_channels: int, width: int) -> None:
        super().__init__()
        in_ch = width + trunk_channels + 2 * self.FOLDED
        groups = 8 if width % 8 == 0 else 1
        self.mix = nn.Conv2d(in_ch, width, 1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, self.FOLDED, 3, padding=1)
        self.norm0 = nn.GroupNorm(groups, width)
        self.norm1 = nn.GroupNorm(groups, width)

    def forward(self, cells: torch.Tensor, trunk: torch.Tensor, cond_frame: torch.Tensor,
                noisy_future: torch.Tensor) -> torch.Tensor:
        """cells: (B, T, width, h, w) token features on the stride-4 grid; trunk: (B, C, h, w);
        cond_frame: (B, 3, H, W); noisy_future: (B, T, 3, H, W) -> (B, T, 3, H, W)."""
        B, T = noisy_future.shape[:2]
        expand = lambda x: x.unsqueeze(1).expand(B, T, *x.shape[1:]).flatten(0, 1)  # noqa: E731
        x = torch.cat([cells.flatten(0, 1), expand(trunk), expand(F.pixel_unshuffle(cond_frame, self.FOLD)),
                       F.pixel_unshuffle(noisy_future.flatten(0, 1), self.FOLD)], dim=1)  # (B*T, in_ch, h, w)
        x = F.gelu(self.norm0(self.mix(x)))
        x = F.gelu(self.norm1(self.conv1(x)))
        out = F.pixel_shuffle(self.conv2(x), self.FOLD)  # (B*T, 3, H, W)
        return out.reshape(B, T, *out.shape[1:])

    def convs(self) -> list[nn.Conv2d]:
        return [self.mix, self.conv1, self.conv2]


class AttentionPool(nn.Module):
    """Per future frame, a learned query attends over that frame's tokens and the conditioning frame's tokens.

    (B, T, n, D) future states + (B, n, D) conditioning states -> (B, T, D). The mean of the frame's own
    tokens is added back, so the lesson's mean pooling is the starting point and attention adds *where*. The
    conditioning frame is in the pool because it is the one clean view of the scene at every noise level: in
    a one-pass (``head``) readout the future tokens are pure noise.
    """

    def __init__(self, d_model: int, n_queries: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.query = nn.Parameter(torch.zeros(n_queries, d_model))
        # the conditioning (instruction, state, noise level) shifts the queries: what to look for depends on
        # what was asked. Zero-initialised, so it starts as a fixed query
        self.query_from_c = nn.Linear(d_model, n_queries * d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, future: torch.Tensor, cond: torch.Tensor, c: torch.Tensor, return_weights: bool = False):
        B, T, n, D = future.shape
        H, d = self.n_heads, D // self.n_heads
        kv_cond = self.kv(self.norm(cond)).unsqueeze(1).expand(B, T, n, 2 * D)  # projected once, shared
        kv = torch.cat([kv_cond, self.kv(self.norm(future))], dim=2)  # (B, T, 2n, 2D)
        k, v = kv.reshape(B, T, 2 * n, 2, H, d).permute(3, 0, 1, 4, 2, 5)  # each (B, T, H, 2n, d)
        q = (self.query + self.query_from_c(c).reshape(B, T, D)).reshape(B, T, H, 1, d)
        if return_weights:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)  # (B, T, H, 1, 2n)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, T, H, 1, d)
        pooled = future.mean(dim=2) + self.proj(out.reshape(B, T, D))
        return (pooled, weights.squeeze(3)) if return_weights else pooled


# ----------------------------------------------------------------------------------------------------------
# The model


class VideoActionDiT(nn.Module):
    """Denoises T future frames given the current frame, an instruction and (optionally) the robot state, and
    reads T actions from the same hidden states. See the module docstring for the token layout."""

    supports_cond_cache = True  # forward(..., cond_cache=dict) reuses the conditioning frame's encodings

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = cfg = config
        D, n = cfg.d_model, cfg.patches_per_frame
        # future frames: their noisy patches, stacked with the conditioning frame's at pixel level ("stack")
        self.patch_embed = nn.Linear(self.future_channels * cfg.patch_size**2, D)
        # the conditioning frame: a conv stem, or a linear patch embedding (shared with the future frames
        # when they are embedded alone, as in the lesson)
        self.cond_stem = ConvStem(3, D, cfg.patch_size, 32, cfg.lang_dim) if cfg.cond_stem == "conv" else None
        self.trunk_stem = (ConvStem(cfg.keypoint_channels, D, cfg.patch_size // 4, 2 * cfg.keypoint_channels)
                           if cfg.cond_stem == "trunk" else None)
        self.cond_embed = (nn.Linear(3 * cfg.patch_size**2, D)
                           if cfg.cond_stem == "linear" and cfg.future_input == "stack" else None)
        # Positions factorised as space + time: pos[f, s] = time[f] + space[s], for T + 1 frames.
        if cfg.pos_embed == "sincos":
            self.register_buffer("space_pos", torch.zeros(n, D), persistent=False)
            self.register_buffer("time_pos", torch.zeros(cfg.n_future + 1, D), persistent=False)
        else:
            self.space_pos = nn.Parameter(torch.zeros(n, D))
            self.time_pos = nn.Parameter(torch.zeros(cfg.n_future + 1, D))
        self.t_embedder = TimestepEmbedder(D)
        self.text_encoder = TextEncoder(cfg.vocab_size, cfg.lang_dim, cfg.max_text_len, cfg.text_layers, cfg.text_bigrams)
        self.text_proj = nn.Linear(cfg.lang_dim, D)
        self.state_embedder = (
            nn.Sequential(nn.Linear(cfg.state_dim, D), nn.SiLU(), nn.Linear(D, D))
            if cfg.state_dim and cfg.state_in_blocks else None
        )
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.n_layers))
        if cfg.video_head == "conv":  # token states -> features on the stride-4 grid -> pixels (ConvVideoHead)
            self.final_layer = FinalLayer(D, cfg.video_head_width * (cfg.patch_size // 4) ** 2)
            self.video_head = ConvVideoHead(cfg.keypoint_channels, cfg.video_head_width)
        else:  # token states -> the patch's pixels
            self.final_layer = FinalLayer(D, 3 * cfg.patch_size**2)
            self.video_head = None
        self.action_pool = AttentionPool(D, cfg.n_future, cfg.n_heads) if cfg.action_pool == "attention" else None
        self.keypoints = (KeypointEncoder(cfg.lang_dim, cfg.keypoint_channels, cfg.keypoints, cfg.keypoint_layout)
                          if cfg.keypoints else None)
        # the pooled states are normalised on their own: the residual stream's scale (~10) would otherwise drown
        # the keypoints (in [-1, 1]) and the state under one LayerNorm (measured: the policy then ignored the image)
        self.action_norm = nn.LayerNorm(D)
        head_in = D * cfg.action_from_dit + 2 * cfg.keypoints + (cfg.state_dim if self.state_in_head else 0)
        # per frame: (D + 2K + S) -> one action; or, from the keypoints and state alone with chunk_head, the
        # whole chunk at once (2K + S) -> T x action_dim, as the image BC's head
        chunk = cfg.n_future if self.reads_keypoints_only and cfg.chunk_head else 1
        if cfg.action_diffusion:  # a denoiser: (inputs, noisy chunk, noise-level features) -> the clean chunk
            head_in += chunk * cfg.action_dim + ACTION_T_FEATURES
            alpha_bar = torch.cumprod(1 - cosine_betas(cfg.action_diffusion), dim=0).float()
            self.register_buffer("action_alpha_bar", alpha_bar, persistent=False)
        self.action_head = mlp(head_in, cfg.action_hidden, chunk * cfg.action_dim, cfg.action_layers)
        # training-time only: privileged targets (object positions) read from the keypoints; see ModelConfig
        self.aux_head = mlp(2 * cfg.keypoints, cfg.action_hidden, cfg.aux_dim) if cfg.aux_dim else None
        # training-time only, unsupervised: the keypoints decoded into two small frames; see ModelConfig
        side = cfg.keypoint_decoder
        self.keypoint_decoder = mlp(2 * cfg.keypoints, 512, 2 * 3 * side * side, 2) if side else None
        self.initialize_weights()

    @property
    def reads_keypoints_only(self) -> bool:
        """Whether the actions come from the keypoints and the state alone (action_from_dit=false): they then
        cannot depend on the noisy future frames, and :meth:`keypoint_actions` reads them without the blocks."""
        return not self.config.action_from_dit

    @property
    def state_in_head(self) -> bool:
        """Whether the state is concatenated to the action head's input (with keypoints, or when it does not
        enter the blocks)."""
        cfg = self.config
        return bool(cfg.state_dim) and (cfg.keypoints > 0 or not cfg.state_in_blocks)

    @property
    def future_channels(self) -> int:
        """Input channels per future pixel: 3, or 6 with the conditioning frame stacked on."""
        return 6 if self.config.future_input == "stack" else 3

    def initialize_weights(self) -> None:
        """Xavier linears, DiT's small normal embedders, sin-cos positions, adaLN-Zero (modulations and video
        head at exactly zero, so every block starts as the identity and the video prediction starts at 0)."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        cfg = self.config
        if cfg.pos_embed == "sincos":
            grid = cfg.img_size // cfg.patch_size
            self.space_pos.copy_(torch.from_numpy(sincos_2d(cfg.d_model, grid)).float())
            self.time_pos.copy_(torch.from_numpy(sincos_1d(cfg.d_model, np.arange(cfg.n_future + 1))).float())
        else:
            nn.init.normal_(self.space_pos, std=0.02)
            nn.init.normal_(self.time_pos, std=0.02)
        for layer in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        nn.init.normal_(self.text_encoder.embed.weight, std=0.02)
        nn.init.normal_(self.text_encoder.pos, std=0.02)
        nn.init.normal_(self.text_encoder.null, std=0.02)
        if self.text_encoder.bigram_embed is not None:
            nn.init.normal_(self.text_encoder.bigram_embed.weight, std=0.02)
        with torch.no_grad():
            self.text_encoder.embed.weight[0].zero_()  # padding row
            if self.text_encoder.bigram_embed is not None:
                self.text_encoder.bigram_embed.weight[0].zero_()
        D = cfg.d_model
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            with torch.no_grad():  # chunks: shift, scale, gate (attention), shift, scale, gate (MLP)
                block.adaLN_modulation[-1].bias[2 * D:3 * D] = cfg.gate_init
                block.adaLN_modulation[-1].bias[5 * D:6 * D] = cfg.gate_init
        if self.cond_stem is not None:
            for film in self.cond_stem.films:
                nn.init.zeros_(film.weight)
                nn.init.zeros_(film.bias)
        if self.keypoints is not None:
            for film in self.keypoints.films:
                nn.init.zeros_(film.weight)
                nn.init.zeros_(film.bias)
        if self.action_pool is not None:
            nn.init.zeros_(self.action_pool.query_from_c.weight)
            nn.init.zeros_(self.action_pool.query_from_c.bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.video_head is not None:  # the output starts at zero (the last convolution), not the cells:
            nn.init.xavier_uniform_(self.final_layer.linear.weight)  # the tokens shape them from the first step
            nn.init.zeros_(self.video_head.conv2.weight)
            nn.init.zeros_(self.video_head.conv2.bias)

    def condition(self, t: torch.Tensor, lang: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """c = timestep + instruction (+ state) embedding: (B, D); ``lang`` is the text encoder's (B, lang_dim)."""
        c = self.t_embedder(t) + self.text_proj(lang)
        if self.state_embedder is not None:
            c = c + self.state_embedder(state)
        return c

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
        need_video: bool = True,
        pixel_weight: torch.Tensor | None = None,
        target_aux: torch.Tensor | None = None,
        aux_weight: float = 1.0,
        action_mask: torch.Tensor | None = None,
        cond_cache: dict | None = None,
        recon_future: torch.Tensor | None = None,
        recon_weight: float = 1.0,
    ) -> ModelOutput:
        """Predict the noise (or v) of the future frames and the actions; losses when targets are given.

        cond_frame: (B, 3, H, W) in [-1, 1]; noisy_future: (B, T, 3, H, W); t: (B,) long in [0, K);
        text_tokens: (B, L) long; state: (B, state_dim) or None when state_dim == 0.
        target_noise: (B, T, 3, H, W), the diffusion target (eps or v); target_actions: (B, T, action_dim).
        loss = video_loss + action_weight * action_loss, each term present only if its target is given.
        text_dropout: probability per sample of replacing the instruction by the null embedding.
        need_video: False skips the video head (``video_pred`` is None) unless ``target_noise`` is given.
        pixel_weight: per-pixel weights of the video loss, broadcastable to (B, T, 3, H, W) (e.g. more weight
        on the pixels that change); the loss is then the weighted mean.
        target_aux: (B, aux_dim) privileged targets of the auxiliary head (training only; the head runs only
        when they are given); adds aux_weight * aux_loss to the loss.
        action_mask: (B,) bool, the samples whose actions count in the action loss (None: all).
        recon_future: (B, T, 3, H, W) the clean future frames, for the keypoint decoder's loss (training only;
        runs only when given and the model has the decoder); adds recon_weight * recon_loss to the loss.
        cond_cache: a dict kept across calls with the same cond_frame, text_tokens and no text dropout (the
        steps of one DDIM sampling): the instruction embedding, the conditioning frame's tokens and its
        keypoints are computed once and reused. None: computed every call.
        """
        self._check_inputs(cond_frame, noisy_future, t, state)
        cfg, n = self.config, self.config.patches_per_frame
        pos = (self.time_pos.unsqueeze(1) + self.space_pos.unsqueeze(0)).flatten(0, 1)  # ((T+1)*n, D)
        cache = cond_cache if cond_cache is not None else {}

        def cached(key, compute):
            if key not in cache:
                cache[key] = compute()
            return cache[key]

        # (B, lang_dim); the null instruction when dropped
        lang = cached("lang", lambda: self.text_encoder(text_tokens, text_dropout))
        # the keypoint encoder's (B, C, H/4, W/4) map of the conditioning frame, computed once per call (or per
        # sampling with cond_cache) for whichever of the trunk stem, the conv video head and the keypoints use it
        trunk_map = lambda: cached("trunk", lambda: self.keypoints.features(cond_frame, lang))  # noqa: E731
        future_in = noisy_future  # (B, T, 3, H, W)
        if cfg.future_input == "stack":  # every future pixel carries the current pixel beside it
            future_in = torch.cat([noisy_future, cond_frame.unsqueeze(1).expand_as(noisy_future)], dim=2)
        future_tokens = self.patch_embed(patchify(future_in, cfg.patch_size))  # (B, T*n, D)
        if self.trunk_stem is not None:  # one conv trunk for the keypoints and the conditioning tokens
            cond_tokens = cached("cond_tokens", lambda: self.trunk_stem(trunk_map()))  # (B, n, D)
        elif self.cond_stem is not None:
            cond_tokens = cached("cond_tokens", lambda: self.cond_stem(cond_frame, lang))  # (B, n, D)
        else:
            embed = self.cond_embed if self.cond_embed is not None else self.patch_embed
            cond_tokens = embed(patchify(cond_frame.unsqueeze(1), cfg.patch_size))  # (B, n, D)
        x = torch.cat([cond_tokens, future_tokens], dim=1) + pos  # (B, (T+1)*n, D)
        c = self.condition(t, lang, state)  # (B, D)

        attention = [] if return_attention else None
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, c, return_attention=True)
                attention.append(attn)  # (B, h, N, N)
            else:
                x = block(x, c)  # (B, (T+1)*n, D)

        future = x[:, n:]  # (B, T*n, D): the conditioning frame's tokens are context only
        video_pred = None  # need_video=False (an actions-only readout) skips the video head
        if need_video or target_noise is not None:
            if self.video_head is None:
                video_pred = unpatchify(self.final_layer(future, c), cfg.n_future, cfg.img_size, cfg.patch_size)
            else:
                trunk = trunk_map()  # (B, C, H/4, W/4)
                cells = unpatchify(self.final_layer(future, c), cfg.n_future, cfg.img_size // 4, cfg.patch_size // 4,
                                   channels=cfg.video_head_width)  # (B, T, width, H/4, W/4)
                video_pred = self.video_head(cells, trunk.detach() if cfg.video_head_detach else trunk,
                                             cond_frame, noisy_future)
            if cfg.residual:  # the head predicts the change from the conditioning frame
                video_pred = video_pred + cond_frame.unsqueeze(1)  # (B, T, 3, H, W)
        keypoints = aux_loss = recon_loss = None
        if self.keypoints is not None:  # the same scene positions (and state) for every future frame
            keypoints = cached("keypoints", lambda: self.keypoints.softmax(trunk_map()))  # (B, 2K)
            aux_loss = self._aux_loss(keypoints, target_aux)
            recon_loss = self._recon_loss(keypoints, cond_frame, recon_future)
        keypoint_loss = None
        if self.reads_keypoints_only:  # (B, T, action_dim); a denoising head's loss instead when trained here
            actions, keypoint_loss = self._keypoint_head(keypoints, state, target_actions)
        else:
            per_frame = future.reshape(x.shape[0], cfg.n_future, n, cfg.d_model)  # (B, T, n, D)
            per_frame = (per_frame.mean(dim=2) if self.action_pool is None
                         else self.action_pool(per_frame, x[:, :n], c))
            per_frame = self.action_norm(per_frame)  # (B, T, D)
            extra = ([keypoints] if keypoints is not None else []) + ([state] if self.state_in_head else [])
            if extra:  # (B, 2K), (B, S): the same scene positions and state for every future frame
                extra = torch.cat(extra, dim=1).unsqueeze(1).expand(-1, cfg.n_future, -1)
                per_frame = torch.cat([per_frame, extra], dim=2)  # (B, T, D + 2K + S)
            actions = self.action_head(per_frame)  # (B, T, action_dim)

        video_loss = action_loss = loss = None
        if target_noise is not None:
            if pixel_weight is None:
                video_loss = F.mse_loss(video_pred, target_noise)
            else:
                weight = pixel_weight.expand_as(video_pred)
                video_loss = (weight * (video_pred - target_noise).pow(2)).sum() / weight.sum().clamp_min(1e-8)
            loss = video_loss
        if keypoint_loss is not None and (action_mask is None or cfg.action_diffusion):
            action_loss = keypoint_loss  # every sample counts: the keypoint head cannot read the noisy future
            loss = action_weight * action_loss if loss is None else loss + action_weight * action_loss
        elif target_actions is not None:
            if target_actions.shape != actions.shape:
                raise UserError(f"target_actions shape {tuple(target_actions.shape)} != {tuple(actions.shape)}")
            if action_mask is None:
                action_loss = F.mse_loss(actions, target_actions)
            else:  # the mean over the chosen samples (0, still differentiable, when none is chosen)
                per_sample = (actions - target_actions).pow(2).flatten(1).mean(1)  # (B,)
                action_loss = (per_sample * action_mask).sum() / action_mask.sum().clamp_min(1)
            loss = action_weight * action_loss if loss is None else loss + action_weight * action_loss
        for term, weight in ((aux_loss, aux_weight), (recon_loss, recon_weight)):
            if term is not None:
                loss = weight * term if loss is None else loss + weight * term
        return ModelOutput(
            video_pred=video_pred, actions=actions, video_loss=video_loss, action_loss=action_loss, loss=loss,
            attention=attention, aux_loss=aux_loss, recon_loss=recon_loss,
        )  # fmt: skip

    def keypoint_actions(self, cond_frame: torch.Tensor, text_tokens: torch.Tensor, state: torch.Tensor | None = None,
                         text_dropout: float = 0.0, target_aux: torch.Tensor | None = None,
                         recon_future: torch.Tensor | None = None, target_actions: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> ModelOutput:
        """The actions of a model whose head reads the keypoints and the state only (action_from_dit=false),
        without running the transformer: the conditioning frame through the keypoint encoder, the head.
        Returns a ModelOutput: actions (B, T, action_dim), the same as :meth:`forward`'s; aux_loss and
        recon_loss (or None) when target_aux and recon_future are given, as in :meth:`forward`; action_loss
        when target_actions (B, T, action_dim) are given: the MSE of the actions, or for a denoising head
        (action_diffusion > 0) the MSE of its clean-chunk prediction, with ``actions`` then None (not sampled).
        ``generator``: the denoising head's noise (training draws and sampling); None: torch's global one."""
        if not self.reads_keypoints_only:
            raise UserError("keypoint_actions: this model's action head reads the DiT's token states "
                            "(action_from_dit=true); use forward() or Diffusion.head_actions")
        self._check_state(cond_frame.shape[0], state)
        keypoints = self.keypoints(cond_frame, self.text_encoder(text_tokens, text_dropout))  # (B, 2K)
        actions, action_loss = self._keypoint_head(keypoints, state, target_actions, generator)
        return ModelOutput(actions=actions, action_loss=action_loss,
                           aux_loss=self._aux_loss(keypoints, target_aux),
                           recon_loss=self._recon_loss(keypoints, cond_frame, recon_future))

    def _keypoint_head(self, keypoints: torch.Tensor, state: torch.Tensor | None, target: torch.Tensor | None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(actions, action_loss) of the keypoint head: the regression head's actions and their MSE against
        ``target``; the denoising head's loss when ``target`` is given (actions None), else sampled actions."""
        if not self.config.action_diffusion:
            actions = self._actions_from_keypoints(keypoints, state)
            if target is not None and target.shape != actions.shape:
                raise UserError(f"target_actions shape {tuple(target.shape)} != {tuple(actions.shape)}")
            return actions, (F.mse_loss(actions, target) if target is not None else None)
        inputs = self._head_inputs(keypoints, state)
        if target is None:
            return self.sample_actions(inputs, generator), None
        return None, self.action_denoising_loss(inputs, target, generator)

    def _head_inputs(self, keypoints: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([keypoints] + ([state] if self.state_in_head else []), dim=1)  # (B, 2K + S)

    def _actions_from_keypoints(self, keypoints: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """(B, 2K) keypoints and (B, S) state -> (B, T, action_dim), the regression head's."""
        cfg = self.config
        inputs = self._head_inputs(keypoints, state)
        if cfg.chunk_head:
            return self.action_head(inputs).view(-1, cfg.n_future, cfg.action_dim)
        # the per-frame head of earlier runs: one input, so one action repeated over the chunk
        return self.action_head(inputs).unsqueeze(1).expand(-1, cfg.n_future, -1)

    # the denoising action head (action_diffusion > 0) ----------------------------------------------------
    def _predict_action_x0(self, inputs: torch.Tensor, noisy: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """inputs (B, 2K + S), noisy chunks (B, T*A), noise levels k (B,) long -> the clean chunk (B, T*A)."""
        return self.action_head(torch.cat([inputs, noisy, timestep_features(k, ACTION_T_FEATURES, 1000.0)], dim=1))

    def action_denoising_loss(self, inputs: torch.Tensor, target: torch.Tensor,
                              generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the clean chunk predicted from ``target`` (B, T, A) noised at ``action_noise_draws`` uniform
        levels per sample. x0 prediction, as the video head: at the highest noise level it is the regression
        head's loss (the conditional mean); the epsilon objective, first tried, weighs the clean chunk so little
        at high noise that after 2000 steps its samples were twice as far from the demonstrations' actions as
        the regression head's mean, and its PickPlace policy scored 0/100."""
        cfg, R = self.config, self.config.action_noise_draws
        x0 = target.flatten(1).repeat(R, 1)  # (R*B, T*A)
        inputs = inputs.repeat(R, 1)
        k = torch.randint(cfg.action_diffusion, (x0.shape[0],), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        ab = self.action_alpha_bar[k].unsqueeze(1)
        noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return F.mse_loss(self._predict_action_x0(inputs, noisy, k), x0)

    def sample_actions(self, inputs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (deterministic given the starting noise) over the chunk in ``action_sample_steps`` passes of the
        head; the clean-chunk estimate is clamped to +-ACTION_CLAMP (normalised units). -> (B, T, A)."""
        cfg = self.config
        K, S, B = cfg.action_diffusion, cfg.action_sample_steps, inputs.shape[0]
        steps = ddim_timesteps(K, S)
        x = torch.randn((B, cfg.n_future * cfg.action_dim), generator=generator).to(inputs.device, inputs.dtype)
        for i, k_now in enumerate(steps):
            k = torch.full((B,), k_now, dtype=torch.long, device=inputs.device)
            ab = self.action_alpha_bar[k_now]
            x0 = self._predict_action_x0(inputs, x, k).clamp(-ACTION_CLAMP, ACTION_CLAMP)
            if i + 1 == len(steps):
                x = x0
                break
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            ab_prev = self.action_alpha_bar[steps[i + 1]]
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x.view(B, cfg.n_future, cfg.action_dim)

    def _aux_loss(self, keypoints: torch.Tensor, target_aux: torch.Tensor | None) -> torch.Tensor | None:
        if target_aux is None:
            return None
        if self.aux_head is None:
            raise UserError("target_aux given but the model has no auxiliary head (aux_dim=0)")
        return F.mse_loss(self.aux_head(keypoints), target_aux)

    def _recon_loss(self, keypoints: torch.Tensor, cond_frame: torch.Tensor,
                    future: torch.Tensor | None) -> torch.Tensor | None:
        """MSE of the keypoint decoder's two frames against the conditioning frame and the last future frame,
        average-pooled to keypoint_decoder x keypoint_decoder; None without the decoder or the frames."""
        if future is None or self.keypoint_decoder is None:
            return None
        side = self.config.keypoint_decoder
        target = F.adaptive_avg_pool2d(torch.stack([cond_frame, future[:, -1]], dim=1).flatten(0, 1), side)
        pred = self.keypoint_decoder(keypoints).view(-1, 3, side, side)  # (2B, 3, side, side)
        return F.mse_loss(pred, target)

    def _check_inputs(self, cond_frame, noisy_future, t, state) -> None:
        cfg = self.config
        B, S = cond_frame.shape[0], cfg.img_size
        if tuple(cond_frame.shape[1:]) != (3, S, S):
            raise UserError(f"cond_frame shape {tuple(cond_frame.shape)} must be (B, 3, {S}, {S})")
        if tuple(noisy_future.shape) != (B, cfg.n_future, 3, S, S):
            raise UserError(f"noisy_future shape {tuple(noisy_future.shape)} must be ({B}, {cfg.n_future}, 3, {S}, {S})")
        if tuple(t.shape) != (B,):
            raise UserError(f"t shape {tuple(t.shape)} must be ({B},): one diffusion step per sample")
        self._check_state(B, state)

    def _check_state(self, B: int, state: torch.Tensor | None) -> None:
        cfg = self.config
        if cfg.state_dim and (state is None or tuple(state.shape) != (B, cfg.state_dim)):
            got = None if state is None else tuple(state.shape)
            raise UserError(f"state must be ({B}, {cfg.state_dim}) since state_dim={cfg.state_dim}, got {got}")
        if not cfg.state_dim and state is not None:
            raise UserError(f"state given (shape {tuple(state.shape)}) but state_dim=0; set state_dim or pass None")

    # ------------------------------------------------------------------------------------------------------
    # Accounting

    def num_params(self) -> int:
        """Number of parameters (fixed sin-cos positions are buffers and do not count)."""
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> dict[str, int]:
        """Matmul FLOPs per sample (2*m*n*k per matmul, attention included; norms and activations ignored).

        Keys: forward, train_step (= 3 x forward: backward costs about twice the forward), attention (the
        QK^T and AV part of forward), tokens; and for a model whose head reads the keypoints only, actions
        (:meth:`keypoint_actions`: text, keypoint encoder, head; what a sample outside ``--video-batch`` costs).
        """
        cfg = self.config
        D, N, n, L = cfg.d_model, cfg.n_tokens, cfg.patches_per_frame, cfg.n_layers
        hidden, pix, E = int(D * cfg.mlp_ratio), 3 * cfg.patch_size**2, cfg.lang_dim
        mm = lambda m, k, n_: 2 * m * k * n_  # noqa: E731
        cond = mm(1, 256, D) + mm(1, D, D) + mm(1, E, D)  # timestep MLP + text projection
        if self.state_embedder is not None:
            cond += mm(1, cfg.state_dim, D) + mm(1, D, D)
        text_len = cfg.max_text_len
        text = cfg.text_layers * (mm(text_len, E, 3 * E) + 2 * mm(text_len, text_len, E) + mm(text_len, E, E)
                                  + 2 * mm(text_len, E, 2 * E))  # fmt: skip
        attention = L * 2 * mm(N, N, D)  # QK^T and AV, all heads together
        block = mm(N, D, 3 * D) + mm(N, D, D) + 2 * mm(N, D, hidden) + mm(1, D, 6 * D)
        # the final layer's modulation; the action MLP once per future frame, or once for the whole chunk
        # (a denoising head: one pass per sampling step)
        rows = 1 if self.reads_keypoints_only and cfg.chunk_head else cfg.n_future
        rows *= cfg.action_sample_steps if cfg.action_diffusion else 1
        action_mlp = sum(mm(1, m.in_features, m.out_features) for m in self.action_head if isinstance(m, nn.Linear))
        head = mm(1, D, 2 * D) + rows * action_mlp
        if self.video_head is None:
            head += mm(N - n, D, pix)
        else:  # token states to cells, then the convolutions on every future frame's stride-4 grid
            head += mm(N - n, D, self.final_layer.linear.out_features)
            head += cfg.n_future * self._conv_flops(self.video_head.convs(), [], side=cfg.img_size // 4)
        if cfg.action_pool == "attention" and cfg.action_from_dit:  # keys/values of every future token, queries, output projection
            head += mm(N, D, 2 * D) + 2 * mm(cfg.n_future, 2 * n, D) + 2 * mm(cfg.n_future, D, D)
        embed = mm(N - n, self.future_channels * cfg.patch_size**2, D)  # future patches
        if cfg.cond_stem == "conv":
            embed += self._conv_flops(self.cond_stem.convs, self.cond_stem.films)
        elif cfg.cond_stem == "trunk":  # the trunk itself is counted with the keypoints below
            embed += self._conv_flops(self.trunk_stem.convs, self.trunk_stem.films, side=cfg.img_size // 4)
        else:
            embed += mm(n, pix, D)
        encoder = 0
        if cfg.keypoints:  # the encoder, 1x1 maps at stride 4, the expectation
            side = cfg.img_size // 4
            encoder = self._conv_flops(self.keypoints.convs, self.keypoints.films) + mm(cfg.keypoints, side * side, 2)
            if cfg.keypoint_layout == "dit":  # the learned 1x1 maps
                encoder += mm(side * side, cfg.keypoint_channels, cfg.keypoints)
        forward = embed + encoder + cond + text + L * block + attention + head
        out = {"forward": forward, "train_step": 3 * forward, "attention": attention, "tokens": N}
        if self.reads_keypoints_only:
            out["actions"] = text + encoder + rows * action_mlp
        return out

    def _conv_flops(self, convs, films, side: int | None = None) -> int:
        """Matmul FLOPs of a stack of convolutions (and their FiLM projections) on one frame (or, with
        ``side``, on a square map of that side)."""
        flops, side = 0, side or self.config.img_size
        for conv in convs:
            side //= conv.stride[0]
            flops += 2 * side * side * conv.in_channels * conv.kernel_size[0] ** 2 * conv.out_channels
        return flops + sum(2 * self.config.lang_dim * film.out_features for film in films)

    def estimate_mfu(self, samples_per_second: float, peak_flops: float = 90e9) -> float:
        """Model FLOPs utilisation of training at ``samples_per_second`` against ``peak_flops`` (FLOP/s;
        default 90 GFLOP/s, a 2-core fp32 CPU)."""
        return self.estimate_flops()["train_step"] * samples_per_second / peak_flops
