"""What a training stage optimises: the model it builds, its loss on a batch, and its validation.

The training loop (``gr2_sim/train.py``) is the same for every stage; it asks the stage's objective for
these three things. ``VideoObjective`` serves the GR-2 phases (video, robot-video, action: the DiT with
L = L_video [+ lambda L_action]); ``InverseDynamicsObjective`` serves ``--stage idm`` (a CNN that maps two
consecutive frames to the action between them, used by the ``idm`` policy readout); ``BCObjective`` serves
``--stage bc`` (the plain image behaviour-cloning baseline of ``policies/bc.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gr2_sim import checkpoint as ckpt
from gr2_sim.config import ModelConfig, make_config
from gr2_sim.dataset import Normalizer, WindowSampler, random_shift
from gr2_sim.device import to_device
from gr2_sim.diffusion import Diffusion
from gr2_sim.errors import UserError
from gr2_sim.model import VideoActionDiT
from gr2_sim.train_config import video_batch_for

if TYPE_CHECKING:
    from gr2_sim.train_config import TrainConfig

# Weights that may legitimately differ in shape between phases (action/state sizes come from the data).
HEAD_PREFIXES = ("action_head.", "action_pool.", "state_embedder.", "keypoints.", "aux_head.", "action_norm.")
# a pixel "changes" between the conditioning frame and a future frame when some channel moves by more than this
# (frames in [-1, 1]: 0.1 is 13/255 of the 0-255 range); used by the change-weighted video loss and by
# `gr2-sim experiment video-quality`
CHANGE_THRESHOLD = 0.1
IDM_HORIZON = 4  # consecutive frame pairs per training window of the inverse-dynamics model


class LossModule(torch.nn.Module):
    """Wraps ``model.compute_loss(batch)`` as ``forward`` so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict:
        return self.model.compute_loss(batch)


# ------------------------------------------------------------------------------------------ the DiT phases
def build_model_config(cfg: TrainConfig, train) -> ModelConfig:
    action_dim = train.actions.shape[1] if train.actions is not None else None
    state_dim = train.states.shape[1] if cfg.use_state and train.states.shape[1] else 0
    fields = dict(cfg.overrides or {}, img_size=train.image_size)
    if cfg.init:
        base = ckpt.load_model_config(cfg.init, "--init").to_dict()
        if cfg.preset:
            preset = make_config(cfg.preset, **fields).to_dict()
            keys = ("patch_size", "d_model", "n_heads", "n_layers", "n_future", "img_size", "lang_dim")
            diff = {k: (base[k], preset[k]) for k in keys if base[k] != preset[k]}
            if diff:
                raise UserError(f"--init {cfg.init} has sizes that do not match --preset {cfg.preset}: "
                                + ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diff.items())
                                + "; drop --preset to keep the init run's sizes")
        base.update(fields)
        if cfg.stage == "action":
            note_init_head(cfg.init, base)
    else:
        base = make_config(cfg.preset or "small", **fields).to_dict()
    if base["img_size"] != train.image_size:
        raise UserError(f"{cfg.data} has {train.image_size}px frames but the model expects {base['img_size']}px")
    if action_dim is not None:
        base["action_dim"] = action_dim
    base["aux_dim"] = cfg.aux_state if cfg.stage == "action" else 0
    base["state_dim"] = state_dim if cfg.stage != "video" else base.get("state_dim", 0)
    return ModelConfig.from_dict(base)


HEAD_FIELDS = ("action_from_dit", "keypoints", "keypoint_layout", "action_layers", "action_hidden", "action_pool",
               "chunk_head", "action_diffusion")  # what decides the action head's design


def note_init_head(init: str, config: dict) -> dict:
    """Print how the action head kept from ``--init`` (with any --set applied) differs from today's small preset,
    so that an init run of an older design is not mistaken for the default; returns the differences."""
    small = make_config("small").to_dict()
    diff = {k: (config[k], small[k]) for k in HEAD_FIELDS if config.get(k) != small[k]}
    if diff:
        print(f"--init {init}: its action head is kept, which differs from the small preset's in "
              + ", ".join(f"{k}={a!r} (small: {b!r})" for k, (a, b) in diff.items())
              + "; --set FIELD=VALUE changes a head field (its weights then start fresh)", flush=True)
    return diff


def load_init(model: torch.nn.Module, run: str) -> list[str]:
    """Copy an earlier phase's EMA weights; heads whose sizes changed start fresh. Returns those keys."""
    weights = ckpt.load_weights(run, "ema")
    own = model.state_dict()
    fresh = []
    for key, value in own.items():
        if key in weights and weights[key].shape == value.shape:
            own[key] = weights[key]
        elif key.startswith(HEAD_PREFIXES):
            fresh.append(key)
        else:
            got = tuple(weights[key].shape) if key in weights else "missing"
            raise UserError(f"--init {run}: weight {key} has shape {got}, the model needs {tuple(value.shape)}; "
                            f"the init run was trained with other model sizes")
    model.load_state_dict(own)
    return fresh


def changed_pixels(cond: torch.Tensor, future: torch.Tensor, threshold: float = CHANGE_THRESHOLD) -> torch.Tensor:
    """(B, T, 1, H, W) bool: where a future frame differs from the conditioning frame (B, 3, H, W) by more
    than ``threshold`` in some channel."""
    return (future - cond.unsqueeze(1)).abs().amax(dim=2, keepdim=True) > threshold


def diffusion_loss(model, diffusion: Diffusion, batch: dict, action_weight: float, generator: torch.Generator,
                   use_actions: bool, text_dropout: float, shift: int = 0, pure_noise: float = 0.0,
                   change_weight: float = 0.0, aux_weight: float = 1.0, video_weight: float = 1.0,
                   action_on_pure_noise: bool = False, video_batch: int | None = 0, recon_weight: float = 1.0):
    """Noise the future frames at a random step and predict the noise (and the actions). ``shift``: random-shift
    augmentation of the window's frames, in pixels (0: none). ``pure_noise``: the fraction of samples whose
    future frames are noised to the last step, K - 1 (see TrainConfig.pure_noise). ``change_weight``: the
    video loss weighs the pixels that change (:func:`changed_pixels`) 1 + change_weight times the others.
    ``aux_weight``: weight of the auxiliary (privileged) loss when the batch carries "aux" targets.
    ``action_on_pure_noise``: the action loss averages over the pure-noise samples only (the head readout's input).
    ``recon_weight``: weight of the keypoint decoder's loss (models with ``keypoint_decoder`` > 0; every sample).

    ``video_weight`` scales the video term: L = video_weight * L_video + action_weight * L_action. At 0 (GR-1's
    "no video prediction" ablation) there are no future frames to denoise: every sample's future is pure noise
    (t = K - 1, what the one-pass head readout sees), no video target is passed, and L = action_weight * L_action.

    A model whose actions come from the keypoints and the state alone (``model.reads_keypoints_only``) cannot
    read the noisy future, so its action loss counts every sample whatever ``action_on_pure_noise``, through
    :meth:`~gr2_sim.model.VideoActionDiT.keypoint_actions`; ``video_batch`` (> 0) then runs the transformer
    and the video loss on the first ``video_batch`` samples only, the action loss on the whole batch (None: a
    quarter of it, :func:`~gr2_sim.train_config.video_batch_for`).
    """
    if shift:
        batch = dict(batch)
        batch["cond"], batch["future"] = random_shift([batch["cond"], batch["future"]], shift, generator)
    future = batch["future"]  # (B, T, 3, H, W)
    B, K = future.shape[0], diffusion.num_steps
    t = torch.randint(K, (B,), generator=generator)
    if pure_noise > 0:
        t = torch.where(torch.rand(B, generator=generator) < pure_noise, K - 1, t)
    if video_weight == 0:
        t = torch.full_like(t, K - 1)
    t = to_device(t, future.device)  # drawn on the CPU generator: the same numbers on every device
    noise = to_device(torch.randn(future.shape, generator=generator), future.device)
    keypoints_only = getattr(model, "reads_keypoints_only", False)
    if video_batch is None:  # automatic: a quarter of the batch where the actions come from the keypoints
        video_batch = video_batch_for(None, B, keypoints_only and use_actions)
    if video_batch and not (keypoints_only and use_actions):
        raise UserError(f"--video-batch {video_batch} runs the video loss on part of the batch and the action loss "
                        f"on all of it: it needs --stage action and a model whose action head reads the keypoints "
                        f"only (--set action_from_dit=false)")
    if keypoints_only and use_actions:  # the actions from the keypoints, the transformer for the video only
        head = model.keypoint_actions(batch["cond"], batch["text"], batch.get("state"), text_dropout,
                                      batch.get("aux"), recon_future=future, target_actions=batch["actions"],
                                      generator=generator)
        action_loss = head.action_loss  # the MSE, or a denoising head's loss (its actions then None)
        loss = action_weight * action_loss
        for term, weight in ((head.aux_loss, aux_weight), (head.recon_loss, recon_weight)):
            if term is not None:
                loss = loss + weight * term
        out = {"actions": head.actions, "action_loss": action_loss, "aux_loss": head.aux_loss,
               "recon_loss": head.recon_loss, "video_loss": None}
        if video_weight > 0:
            V = min(video_batch or B, B)
            part = {key: (value[:V] if value is not None else None) for key, value in
                    (("cond", batch["cond"]), ("future", future), ("text", batch["text"]), ("state", batch.get("state")))}
            video = _video_loss(model, diffusion, part, t[:V], noise[:V], change_weight, text_dropout)
            out.update(video_loss=video["video_loss"], video_pred=video["video_pred"])
            loss = loss + video_weight * video["video_loss"]
        out["loss"] = loss
        return out
    noisy = diffusion.q_sample(future, t, noise)
    target = diffusion.target(future, noise, t) if video_weight > 0 else None
    weight = _pixel_weight(batch["cond"], future, change_weight)
    out = model(batch["cond"], noisy, t, batch["text"], batch.get("state"), target_noise=target,
                target_actions=batch["actions"] if use_actions else None, action_weight=action_weight,
                text_dropout=text_dropout, need_video=video_weight > 0, pixel_weight=weight,
                target_aux=batch.get("aux"), aux_weight=aux_weight, recon_future=future, recon_weight=recon_weight,
                action_mask=(t == K - 1) if use_actions and action_on_pure_noise else None)
    if 0 < video_weight != 1:
        out["loss"] = out["loss"] + (video_weight - 1) * out["video_loss"]
    return out


def _video_loss(model, diffusion: Diffusion, batch: dict, t: torch.Tensor, noise: torch.Tensor,
                change_weight: float, text_dropout: float):
    """The video half's loss alone on ``batch`` (cond, future, text, state) at steps ``t`` with ``noise``."""
    future = batch["future"]
    return model(batch["cond"], diffusion.q_sample(future, t, noise), t, batch["text"], batch["state"],
                 target_noise=diffusion.target(future, noise, t), text_dropout=text_dropout,
                 pixel_weight=_pixel_weight(batch["cond"], future, change_weight))


def _pixel_weight(cond: torch.Tensor, future: torch.Tensor, change_weight: float) -> torch.Tensor | None:
    """Video-loss weights: 1 + change_weight on the pixels that change (:func:`changed_pixels`), 1 elsewhere."""
    return 1.0 + change_weight * changed_pixels(cond, future).float() if change_weight > 0 else None


class VideoObjective:
    """Phases 1-3: the video+action DiT."""

    kind = "dit"

    def __init__(self, cfg: TrainConfig, train_eps, run, resume: bool):
        self.cfg = cfg
        self.use_actions = cfg.stage == "action"
        self.model_config = ckpt.load_model_config(run) if resume else build_model_config(cfg, train_eps)
        self.text_dropout = cfg.text_dropout if cfg.stage != "video" else 0.0
        self.diffusion = Diffusion(self.model_config)
        self.fresh: list[str] = []
        # the samples of each batch that carry the video loss (0: all), resolved once and saved in config.json
        self.video_batch = video_batch_for(cfg.video_batch, cfg.batch_size,
                                           self.use_actions and not self.model_config.action_from_dit)

    @property
    def needs_normalizer(self) -> bool:
        return self.use_actions or self.model_config.state_dim > 0

    def sampler_args(self) -> dict[str, Any]:
        m = self.model_config
        return dict(n_future=m.n_future, max_text_len=m.max_text_len, vocab_size=m.vocab_size,
                    use_actions=self.use_actions, use_text=self.cfg.stage != "video", use_state=m.state_dim > 0)

    def build_model(self, init: str | None) -> torch.nn.Module:
        model = VideoActionDiT(self.model_config)
        if init:
            self.fresh = load_init(model, init)
        return model

    def wrap_for_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def loss(self, model, batch: dict, generator: torch.Generator) -> dict:
        return diffusion_loss(model, self.diffusion, batch, self.cfg.action_weight, generator, self.use_actions,
                              self.text_dropout, self.cfg.shift, self.cfg.pure_noise if self.use_actions else 0.0,
                              self.cfg.change_weight, self.cfg.aux_weight, self.cfg.video_weight,
                              self.cfg.action_on_pure_noise, self.video_batch, self.cfg.recon_weight)

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_config.to_dict(), "fresh_init_weights": self.fresh,
                "video_batch": self.video_batch}

    @torch.no_grad()
    def validate(self, model, sampler: WindowSampler, rows: np.ndarray, device, normalizer: Normalizer | None,
                 batch_size: int = 64) -> dict[str, float]:
        """Held-out video denoising MSE (fixed noise levels) and action MSE of the one-pass head readout."""
        diffusion, gen = self.diffusion, torch.Generator().manual_seed(1234)
        video, action, n = 0.0, 0.0, 0
        for i in range(0, len(rows), batch_size):
            batch = sampler.batch(rows[i:i + batch_size], device)
            future = batch["future"]
            B = future.shape[0]
            t = torch.randint(diffusion.num_steps, (B,), generator=gen).to(device)
            noise = torch.randn(future.shape, generator=gen).to(device)
            out = model(batch["cond"], diffusion.q_sample(future, t, noise), t, batch["text"], batch.get("state"),
                        target_noise=diffusion.target(future, noise, t))
            video += float(out["video_loss"]) * B
            if self.use_actions:
                pred = diffusion.head_actions(model, batch["cond"], batch["text"], batch.get("state"), gen)
                err = normalizer.unnormalize_actions(pred) - normalizer.unnormalize_actions(batch["actions"])
                action += float(err.pow(2).mean()) * B
            n += B
        out = {"val_video_mse": video / n}
        if self.use_actions:
            out["val_action_mse"] = action / n
        return out


# ------------------------------------------------------------------------------------------ inverse dynamics
class InverseDynamicsObjective:
    """``--stage idm``: (o_t, o_t+1) -> a_t on the demonstrations."""

    kind = "idm"
    needs_normalizer = True

    def __init__(self, cfg: TrainConfig, train_eps, run, resume: bool):
        from policies.inverse_dynamics import IDMConfig

        if train_eps.actions is None:
            raise UserError(f"{cfg.data} holds {train_eps.kind} data without actions, but --stage idm needs "
                            f"demonstrations: collect them with `gr2-sim collect` (without --no-actions)")
        if cfg.init:
            raise UserError("--stage idm trains from scratch; drop --init")
        if resume:
            self.model_config = IDMConfig.from_dict(ckpt.load_config(run)["model"])
        else:
            state_dim = train_eps.states.shape[1] if cfg.use_state else 0
            self.model_config = IDMConfig.from_dict({"img_size": train_eps.image_size, "state_dim": state_dim,
                                                     "action_dim": train_eps.actions.shape[1], **(cfg.overrides or {})},
                                                    saved=False)

    def sampler_args(self) -> dict[str, Any]:
        return dict(n_future=IDM_HORIZON, max_text_len=1, vocab_size=2, use_actions=True, use_text=False,
                    use_state=self.model_config.state_dim > 0, future_state=self.model_config.next_state)

    def build_model(self, init: str | None) -> torch.nn.Module:
        from policies.inverse_dynamics import InverseDynamicsModel

        return InverseDynamicsModel(self.model_config)

    def wrap_for_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        return LossModule(model)

    def loss(self, model, batch: dict, generator: torch.Generator) -> dict:
        return model(batch) if isinstance(model, torch.nn.parallel.DistributedDataParallel) \
            else model.compute_loss(batch)

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_config.to_dict()}

    @torch.no_grad()
    def validate(self, model, sampler: WindowSampler, rows: np.ndarray, device, normalizer: Normalizer,
                 batch_size: int = 64) -> dict[str, float]:
        """Held-out action MSE (in the env's action units) on real consecutive frames."""
        total, n = 0.0, 0
        for i in range(0, len(rows), batch_size):
            batch = sampler.batch(rows[i:i + batch_size], device)
            pred = model.chunk_actions(batch["cond"], batch["future"], batch.get("state"), batch.get("future_state"))
            err = normalizer.unnormalize_actions(pred) - normalizer.unnormalize_actions(batch["actions"])
            total += float(err.pow(2).mean()) * len(pred)
            n += len(pred)
        return {"val_action_mse": total / n}


# ------------------------------------------------------------------------------------------ image BC
class BCObjective:
    """``--stage bc``: (o_t, instruction, state) -> a_t .. a_t+T-1 on the demonstrations, MSE on normalised
    actions, frames randomly shifted by ``--shift`` pixels."""

    kind = "bc"
    needs_normalizer = True

    def __init__(self, cfg: TrainConfig, train_eps, run, resume: bool):
        from policies.bc import BCConfig

        if train_eps.actions is None:
            raise UserError(f"{cfg.data} holds {train_eps.kind} data without actions, but --stage bc needs "
                            f"demonstrations: collect them with `gr2-sim collect` (without --no-actions)")
        if cfg.init:
            raise UserError("--stage bc trains from scratch (it has no video half to pre-train); drop --init")
        if cfg.preset:
            raise UserError(f"--preset {cfg.preset} sizes the DiT; --stage bc has its own sizes (policies/bc.py "
                            f"BCConfig): drop --preset, or change them with --set, e.g. --set hidden=128")
        self.cfg = cfg
        if resume:
            self.model_config = BCConfig.from_dict(ckpt.load_config(run)["model"])
        else:
            state_dim = train_eps.states.shape[1] if cfg.use_state else 0
            self.model_config = BCConfig.from_dict({**(cfg.overrides or {}), "img_size": train_eps.image_size,
                                                    "action_dim": train_eps.actions.shape[1],
                                                    "state_dim": state_dim})

    def sampler_args(self) -> dict[str, Any]:
        m = self.model_config
        # n_future sets the action chunk's length; the future frames it also gathers are not read
        return dict(n_future=m.horizon, max_text_len=m.max_text_len, vocab_size=m.vocab_size, use_actions=True,
                    use_text=True, use_state=m.state_dim > 0)

    def build_model(self, init: str | None) -> torch.nn.Module:
        from policies.bc import BCModel

        return BCModel(self.model_config)

    def wrap_for_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        return LossModule(model)

    def loss(self, model, batch: dict, generator: torch.Generator) -> dict:
        if self.cfg.shift:
            batch = {**batch, "cond": random_shift([batch["cond"]], self.cfg.shift, generator)[0]}
        return model(batch) if isinstance(model, torch.nn.parallel.DistributedDataParallel) \
            else model.compute_loss(batch)

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_config.to_dict()}

    @torch.no_grad()
    def validate(self, model, sampler: WindowSampler, rows: np.ndarray, device, normalizer: Normalizer,
                 batch_size: int = 64) -> dict[str, float]:
        """Held-out action MSE (in the env's action units) of the predicted chunks."""
        total, n = 0.0, 0
        for i in range(0, len(rows), batch_size):
            batch = sampler.batch(rows[i:i + batch_size], device)
            pred = model(batch["cond"], batch["text"], batch.get("state"))
            err = normalizer.unnormalize_actions(pred) - normalizer.unnormalize_actions(batch["actions"])
            total += float(err.pow(2).mean()) * len(pred)
            n += len(pred)
        return {"val_action_mse": total / n}


def make_objective(cfg: TrainConfig, train_eps, run, resume: bool):
    cls = {"idm": InverseDynamicsObjective, "bc": BCObjective}.get(cfg.stage, VideoObjective)
    return cls(cfg, train_eps, run, resume)
