"""Model configuration: one dataclass, validated on construction, plus the size presets.

    from gr2_sim.config import make_config
    cfg = make_config("small", action_dim=4)      # a preset with overrides
    cfg2 = ModelConfig.from_dict(cfg.to_dict())   # JSON round trip (checkpoints store this dict)

Presets (tokens per sample = (n_future + 1) * (img_size / patch_size) ** 2):
    tiny   tests and first contact: runs in seconds
    small  the CPU default (``gr2-sim bench train`` measures its speed on your machine)
    base   the lesson's sizes (patch 8, width 256, 6 layers, 8 heads) with gr2-sim's visual pathway
    lesson the lesson's model as written: 8x8 linear patches for every frame, noise prediction, a mean-pooled
           action head, adaLN-Zero, learned positions; no pixel-level conditioning, no keypoints

The visual pathway (see gr2_sim/model.py): the conditioning frame reaches every future token at pixel level
(``future_input="stack"``), the video head predicts the change from it (``residual``) through convolutions on
a small convolutional trunk's stride-4 map (``video_head="conv"``), and the action head reads spatial-softmax
keypoints of that trunk and the state (``action_from_dit=False``, ``SEE``): the video loss and video
pre-training shape the features the policy locates objects with. ``tiny`` keeps the DiT-state readout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gr2_sim.errors import UserError
from gr2_sim.text import DEFAULT_VOCAB_SIZE

SCHEDULES = ("cosine", "linear")
ACTION_POOLS = ("attention", "mean")
COND_STEMS = ("linear", "conv", "trunk")
PREDICTIONS = ("x0", "eps", "v")
POS_EMBEDS = ("sincos", "learned")
FUTURE_INPUTS = ("stack", "noisy")
VIDEO_HEADS = ("linear", "conv")


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message quotes it and says what to use instead."""


@dataclass
class ModelConfig:
    """Sizes and diffusion settings of the video+action DiT (see ``gr2_sim.model.VideoActionDiT``)."""

    # video
    img_size: int = 64  # frames are square img_size x img_size RGB, floats in [-1, 1]
    patch_size: int = 16  # pixels per patch side; must divide img_size
    n_future: int = 4  # T: future frames denoised (and actions predicted) per sample
    # transformer
    d_model: int = 128  # token width; divisible by n_heads and by 4 (2-D sin-cos positions)
    n_heads: int = 4  # attention heads per block
    n_layers: int = 4  # DiT blocks
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * d_model
    # initial value of the adaLN gates of every block. 0 is adaLN-Zero (every block starts as the identity,
    # DiT's choice for long runs, the lesson's). A gate of 0 also scales the gradient of everything inside the
    # block, and in runs of a few thousand CPU steps the blocks stayed near the identity (Reach 200 demos, 1000
    # steps: 10% success at 0, 26% at 1): see docs/results.md
    gate_init: float = 1.0
    # how the conditioning (current) frame becomes tokens: "linear" patch embedding (the lesson's, as for the
    # future frames) or a small "conv" stem (stride-2 convolutions down to the patch grid; Xiao et al. 2021,
    # "Early convolutions help transformers see better"): the policy must locate small objects in that frame
    # "trunk": the conditioning frame's tokens are read off the keypoint encoder's stride-4 feature map by further
    # stride-2 convolutions, so the video loss trains the features the action head localises objects with
    # (and video pre-training reaches them); needs keypoints > 0
    cond_stem: str = "conv"
    pos_embed: str = "sincos"  # "sincos" (fixed) or "learned"; factorised as space + time either way
    # action head
    action_dim: int = 7  # action size per future frame (e.g. xyz + rpy + gripper)
    action_hidden: int = 256  # hidden width of the action MLP
    # hidden layers of the action MLP (1: Linear-GELU-Linear). Pushing is a nonlinear function of where the cube
    # and the target are (line up behind the cube, opposite the target): the image-BC baseline given the true
    # positions scored 44% on Push with one hidden layer of 256 and 77% with three of 512 (docs/policies.md)
    action_layers: int = 1
    # how a future frame's token states are pooled for its action: "mean" (the lesson's) or "attention" (a
    # learned query per future frame picks tokens, like a spatial softmax; mean pooling is kept alongside).
    # Mean pooling averages away *where* things are: see docs/results.md
    action_pool: str = "attention"
    # spatial-softmax keypoints fed to the action head (Levine et al. 2016; the image readout of robomimic
    # and Diffusion Policy): a small convolutional encoder of the conditioning frame (four 3x3 convolutions,
    # two of stride 2, GroupNorm, FiLM by the instruction) keeps a 16x16 map for a 64x64 frame, and K
    # softmax maps over it become K expected (x, y) image positions, concatenated with the DiT's pooled
    # states and the state. *Where* the named cube is reaches the head as numbers rather than through a 4x4
    # token grid. 0 turns it off (the lesson's readout)
    keypoints: int = 32
    keypoint_channels: int = 32  # width of that encoder's convolutions
    # "dit": four convolutions of keypoint_channels, strides 1, 2, 1, 2, K learned maps; "bc": the image BC's
    # encoder (widths C/2, C/2, C, C, strides 2, 1, 2, 1, SiLU, one keypoint per channel: keypoints == C)
    keypoint_layout: str = "dit"
    # whether the action head reads the DiT's pooled token states (the lesson's readout, beside the keypoints).
    # False: keypoints and state only; the video half then shapes the actions only through a shared trunk
    # (cond_stem="trunk"). Needs keypoints > 0
    action_from_dit: bool = True
    # with action_from_dit=false: one MLP maps the keypoints and the state to the whole chunk (T x action_dim,
    # as the image BC's head does). False: the per-frame head, which, given the same input for every frame,
    # gives the same action at every step of the chunk (how such runs were trained before this field)
    chunk_head: bool = True
    state_dim: int = 0  # proprioceptive state size; 0 = no state conditioning
    # where the state enters: True = the adaLN conditioning of every block (and the action head's input when
    # keypoints > 0); False = the action head's input only, so the DiT's states are a function of the frames
    # and the instruction, and the action head cannot meet its loss from a 128-wide embedding of the state
    state_in_blocks: bool = True
    # privileged training-time supervision: a head on the keypoints predicts aux_dim values per sample (e.g.
    # the object and goal positions of object_state data, `gr2-sim train --aux-state 6`), as Levine et al.
    # (2016) trained their spatial softmax by regressing object poses. Used in training only: a policy never
    # runs it, and reads the camera alone. 0 = off (the default; results with it are reported apart)
    aux_dim: int = 0
    # unsupervised (no labels, video only): an MLP decodes the keypoints into the conditioning frame and the
    # last future frame, downsampled to keypoint_decoder x keypoint_decoder, as the deep spatial autoencoder of
    # Finn et al. (2016) trained its feature points to locate what varies in robot video. It trains the
    # keypoints to carry *where* things are in every phase, phases 1-2 included; the policy never runs it.
    # 0 = off (the default); otherwise a divisor of img_size
    keypoint_decoder: int = 0
    # the action head as a denoiser (Diffusion Policy's readout, Chi et al. 2023): with action_diffusion = K_a
    # > 0 the head is an MLP that predicts the whole clean action chunk from the keypoints, the state, the
    # chunk noised at one of K_a levels and that level (x0 prediction); a query samples the chunk by DDIM in
    # action_sample_steps passes of that MLP. It can give one of several modes where a regression head gives
    # their mean (the Push expert lifts and re-lines up from states where it otherwise pushes). Training draws
    # action_noise_draws noise levels per sample (the MLP is cheap beside the encoder). 0: the regression head
    # (MSE). Needs action_from_dit=false and chunk_head
    action_diffusion: int = 0
    action_sample_steps: int = 10
    action_noise_draws: int = 4
    # language
    lang_dim: int = 64  # instruction embedding width
    vocab_size: int = DEFAULT_VOCAB_SIZE  # hashed word buckets, id 0 = padding (see gr2_sim.text)
    max_text_len: int = 16  # instruction tokens kept (longer instructions are truncated)
    text_layers: int = 1  # transformer layers in the text encoder; 0 = bag of words (mean of embeddings)
    # word-pair embeddings in the text encoder, so "red cube ... blue bowl" is not "blue cube ... red bowl"
    # after pooling (gr2_sim/text.py). Configs saved before this field existed load with False
    text_bigrams: bool = True
    # diffusion
    diffusion_steps: int = 100  # K: training noise levels t = 0 .. K-1
    schedule: str = "cosine"  # beta schedule: "cosine" (Nichol & Dhariwal) or "linear" (DDPM)
    # the video head predicts "x0" (the clean frames), "eps" (the noise) or "v" (velocity). x0 by default: a
    # 16x16x3 patch (768 numbers) of pure noise cannot pass through a 128-wide token, clean frames can
    # (Li & He 2025, "Back to Basics: Let Denoising Generative Models Denoise"). On 200 PickPlace demos the
    # eps loss stalled at 0.87 (predicting zero gives 1.0) while x0 reached 0.014 held-out MSE
    prediction: str = "x0"
    # how a future frame becomes tokens: "stack" = each noisy future patch is stacked channel-wise with the
    # conditioning frame's patch at pixel level before the patch embedding (DIAMOND, Alonso et al. 2024:
    # frame stacking beat cross-attention conditioning), so every future token sees the current pixels at its
    # place; "noisy" = the noisy patch alone (the lesson's), the current frame reachable only through attention
    future_input: str = "stack"
    # the video head predicts the change from the conditioning frame: x0 = v_0 + head(.). The head starts at
    # zero, so training starts from "copy the last frame" and learns what moves. Needs prediction="x0"
    residual: bool = True
    # how the future tokens become pixels: "linear" (DiT's: one linear map per token to its patch's pixels) or
    # "conv" (gr2_sim.model.ConvVideoHead: features on the stride-4 grid, stacked with the keypoint encoder's
    # map of the conditioning frame and the conditioning and noisy frames at full resolution, two 3x3
    # convolutions, pixels). "conv" needs keypoints > 0
    video_head: str = "linear"
    video_head_width: int = 32  # channels per stride-4 cell of the conv video head
    # whether the conv video head's gradient flows into the keypoint encoder's map it reads (True: it reads the
    # map as a fixed input, so that map is shaped by the action loss and, through the conditioning tokens of
    # cond_stem="trunk", by the video loss as before). Inference is the same either way
    video_head_detach: bool = True

    def __post_init__(self) -> None:
        positive = (
            "img_size", "patch_size", "n_future", "d_model", "n_heads", "n_layers",
            "action_dim", "action_hidden", "action_layers", "lang_dim", "vocab_size", "max_text_len", "video_head_width",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        for name in ("text_bigrams", "action_from_dit", "chunk_head", "state_in_blocks", "residual", "video_head_detach"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        for name in ("state_dim", "text_layers", "keypoints", "keypoint_channels", "aux_dim", "keypoint_decoder",
                     "action_diffusion"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}={value!r} must be an integer >= 0 (0 turns it off)")
        if self.img_size % self.patch_size:
            divisors = [p for p in range(1, self.img_size + 1) if self.img_size % p == 0]
            raise ConfigError(
                f"patch_size={self.patch_size} does not divide img_size={self.img_size}; "
                f"use one of {divisors}"
            )
        if self.cond_stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ConfigError(f"cond_stem='conv' needs a power-of-two patch_size, got {self.patch_size}")
        if self.cond_stem == "trunk" and (self.patch_size & (self.patch_size - 1) or self.patch_size < 4
                                          or not self.keypoints):
            raise ConfigError(f"cond_stem='trunk' reads the conditioning tokens off the keypoint encoder's stride-4 "
                              f"map: it needs keypoints > 0 (got {self.keypoints}) and a power-of-two patch_size "
                              f">= 4 (got {self.patch_size}); or use cond_stem='conv'")
        if self.video_head == "conv" and (not self.keypoints or self.patch_size % 4 or self.img_size % 4):
            raise ConfigError(f"video_head='conv' works on the keypoint encoder's stride-4 map: it needs keypoints > 0 "
                              f"(got {self.keypoints}) and patch_size and img_size multiples of 4 (got "
                              f"{self.patch_size}, {self.img_size}); or use video_head='linear'")
        if self.keypoint_layout not in ("dit", "bc"):
            raise ConfigError(f"keypoint_layout={self.keypoint_layout!r} must be 'dit' or 'bc'")
        if self.keypoints and self.keypoint_layout == "bc" and (self.keypoints != self.keypoint_channels
                                                                or self.keypoint_channels % 2):
            raise ConfigError(f"keypoint_layout='bc' reads one keypoint per channel of the last map: it needs keypoints "
                              f"== keypoint_channels, even (got {self.keypoints} and {self.keypoint_channels})")
        if self.keypoints and self.keypoint_channels < 1:
            raise ConfigError(f"keypoints={self.keypoints} needs keypoint_channels >= 1, got {self.keypoint_channels}")
        if self.keypoints and self.img_size % 4:
            raise ConfigError(f"keypoints={self.keypoints}: the keypoint encoder downsamples by 4, so img_size must "
                              f"be a multiple of 4 (got {self.img_size}); or set keypoints=0")
        if self.aux_dim and not self.keypoints:
            raise ConfigError(f"aux_dim={self.aux_dim} trains the keypoint encoder to find the objects: it needs "
                              f"keypoints > 0 (got 0)")
        if self.keypoint_decoder and (not self.keypoints or self.img_size % self.keypoint_decoder):
            sides = [d for d in range(1, self.img_size + 1) if self.img_size % d == 0]
            raise ConfigError(f"keypoint_decoder={self.keypoint_decoder} decodes the keypoints into frames of that "
                              f"side: it needs keypoints > 0 (got {self.keypoints}) and a divisor of img_size="
                              f"{self.img_size} (one of {sides}); or 0 (off)")
        if self.action_diffusion:
            if self.action_diffusion < 2 or self.action_from_dit or not self.chunk_head:
                raise ConfigError(f"action_diffusion={self.action_diffusion} makes the keypoint head a denoiser of the "
                                  f"whole chunk: it needs action_diffusion >= 2, action_from_dit=false and "
                                  f"chunk_head=true (got action_from_dit={self.action_from_dit}, chunk_head="
                                  f"{self.chunk_head}); or action_diffusion=0 (the regression head)")
            for name in ("action_sample_steps", "action_noise_draws"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value:
                    raise ConfigError(f"{name}={value!r} must be a positive integer")
            if self.action_sample_steps > self.action_diffusion:
                raise ConfigError(f"action_sample_steps={self.action_sample_steps} must be <= action_diffusion="
                                  f"{self.action_diffusion} (the training noise levels)")
        if not self.action_from_dit and not self.keypoints:
            raise ConfigError("action_from_dit=false leaves the action head only the keypoints: it needs keypoints > 0")
        if self.residual and self.prediction != "x0":
            raise ConfigError(f"residual=True predicts the clean frames as the conditioning frame plus a change, "
                              f"so it needs prediction='x0' (got {self.prediction!r}); or set residual=false")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"pick n_heads from the divisors of d_model or change d_model"
            )
        if self.d_model % 4:
            raise ConfigError(
                f"d_model={self.d_model} must be divisible by 4 (the 2-D sin-cos position "
                f"embedding splits it in four); try {self.d_model + 4 - self.d_model % 4}"
            )
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio={self.mlp_ratio!r} must be > 0 (4.0 is standard)")
        if self.vocab_size < 2:
            raise ConfigError(f"vocab_size={self.vocab_size} must be >= 2 (id 0 is padding)")
        if not isinstance(self.diffusion_steps, int) or self.diffusion_steps < 2:
            raise ConfigError(f"diffusion_steps={self.diffusion_steps!r} must be an integer >= 2")
        for name, allowed in (("schedule", SCHEDULES), ("prediction", PREDICTIONS), ("pos_embed", POS_EMBEDS),
                              ("action_pool", ACTION_POOLS), ("cond_stem", COND_STEMS),
                              ("future_input", FUTURE_INPUTS), ("video_head", VIDEO_HEADS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {list(allowed)}")

    @property
    def patches_per_frame(self) -> int:
        """Tokens per frame: (img_size / patch_size) ** 2."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def n_tokens(self) -> int:
        """Tokens per sample: the conditioning frame plus n_future future frames."""
        return (self.n_future + 1) * self.patches_per_frame

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error (they usually mean a stale checkpoint)."""
        _check_fields(data)
        if "future_input" not in data:
            raise ConfigError(
                "this checkpoint's model was trained with gr2-sim 0.1, before the visual pathway was redesigned "
                "(pixel-level conditioning, residual video head, keypoint encoder): its weights do not fit this "
                "version. Retrain it with this version (the same `gr2-sim train` command), or evaluate it with "
                "gr2-sim 0.1.0 (git checkout 84611db)")
        return cls(**{**LATER_FIELDS, **data})


# fields added after the redesign, with the value that gives the behaviour configs saved before them were
# trained with (no bigram table in the weights, no auxiliary head, the state in every block, the DiT's states
# read, the linear video head, one hidden action layer, the per-frame head): checkpoints and pinned sweep
# configs without them load as they were
LATER_FIELDS: dict[str, Any] = {"text_bigrams": False, "aux_dim": 0, "state_in_blocks": True, "action_from_dit": True,
                                "video_head": "linear", "action_layers": 1, "chunk_head": False,
                                "keypoint_layout": "dit", "keypoint_decoder": 0}


def _check_fields(data: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown ModelConfig field(s) {unknown}; valid fields are {sorted(known)}")


# the visual pathway of the small and base presets: the action head reads spatial-softmax keypoints of the
# convolutional trunk (the image BC's layout) and the state, through three hidden layers of 512; the conv video
# head trains the same trunk from video (phases 1-2 and the video loss of phase 3). On Push, 200 demos, camera
# only, phase 2 then phase 3: 56% over two seeds against 21% for the image BC (docs/policies.md)
SEE: dict[str, Any] = dict(keypoint_layout="bc", action_from_dit=False, action_layers=3, action_hidden=512,
                           video_head="conv", video_head_detach=False)

# name -> field overrides of the ModelConfig defaults
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(patch_size=16, n_future=2, d_model=32, n_heads=2, n_layers=2, action_hidden=64,
                 lang_dim=32, max_text_len=8, keypoints=4, keypoint_channels=8, cond_stem="trunk"),
    # mlp_ratio 2: ~110 samples/s vs ~89 at 4 (2 cores, batch 32, AdamW, before the conv stem); the linears dominate
    # cond_stem="trunk": Push, 200 demos, step 3000, camera only: 16/100 against 2/100 with the separate conv
    # stem (docs/policies.md, 2026-11-27)
    "small": dict(patch_size=16, n_future=4, d_model=128, n_heads=4, n_layers=4, mlp_ratio=2.0,
                  lang_dim=64, cond_stem="trunk", **SEE),
    "base": dict(patch_size=8, n_future=4, d_model=256, n_heads=8, n_layers=6,
                 lang_dim=128, cond_stem="trunk", **SEE),
    "lesson": dict(patch_size=8, n_future=4, d_model=256, n_heads=8, n_layers=6, action_hidden=256,
                   lang_dim=128, cond_stem="linear", action_pool="mean", keypoints=0, future_input="noisy",
                   residual=False, prediction="eps", gate_init=0.0, pos_embed="learned"),
}  # fmt: skip


def make_config(preset: str = "small", **overrides: Any) -> ModelConfig:
    """The named preset with ``overrides`` applied, e.g. ``make_config("tiny", img_size=32)``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    _check_fields(overrides)
    fields = {**PRESETS[preset], **overrides}
    if fields.get("keypoints", 1) == 0:  # what reads the keypoint encoder falls back to the DiT's own pathway
        for name, needs, value in (("cond_stem", "trunk", "conv"), ("action_from_dit", False, True),
                                   ("video_head", "conv", "linear")):
            if fields.get(name) == needs and name not in overrides:
                fields[name] = value
    if fields.get("prediction", "x0") != "x0" and "residual" not in overrides:
        fields["residual"] = False  # the residual video head is an x0 parameterisation (see ModelConfig)
    return ModelConfig(**fields)
