"""The video + action DiT as a policy: three ways of reading actions out of one model.

    head     one forward pass from pure-noise futures; actions from the action head      1 model call
    denoise  DDIM over the future frames for S steps; actions from the head at the last   S model calls
    idm      DDIM frames, then an inverse-dynamics model on (o_t, o^_t+1), (o^_t+1, o^_t+2), ...
                                                                                          S calls + 1 IDM

    policy = GR2Policy.from_checkpoint("runs/p3", mode="denoise", n_action_steps=2)
    policy.reset(); policy.set_instruction("touch the red cube")
    action = policy.select_action(obs)     # obs = {"image": (64, 64, 3) uint8, "state": (8,) float32}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from gr2_sim import checkpoint as ckpt
from gr2_sim.dataset import Normalizer, frames_to_tensor, tensor_to_frames
from gr2_sim.device import resolve_device  # one rule for --device everywhere
from gr2_sim.diffusion import Diffusion
from gr2_sim.errors import UserError
from gr2_sim.model import VideoActionDiT
from policies.base import CheckpointPolicy
from policies.inverse_dynamics import InverseDynamicsModel, is_idm_run, load_idm

MODES = ("head", "denoise", "idm")


def default_threads() -> int:
    """Intra-op threads for batch-1 inference: half the cores this process may use, 1 to 4.

    Batch-1 matmuls are small, and the simulator and renderer share the machine: on 2 busy cores the `small`
    preset's head query took ~15 ms with 1 thread and 65-125 ms with 2 (threads spinning against other work).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // 2))


def check_mode(mode: str, has_idm: bool) -> None:
    """UserError unless ``mode`` is a readout and an IDM is given exactly when the mode is 'idm'."""
    if mode not in MODES:
        raise UserError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "idm" and not has_idm:
        raise UserError("mode 'idm' needs an inverse-dynamics run: pass --idm RUN (idm_run=...)")
    if mode != "idm" and has_idm:
        raise UserError(f"an inverse-dynamics run (--idm) is only used with mode 'idm', not {mode!r}")


class GR2Policy(CheckpointPolicy):
    """A trained :class:`VideoActionDiT` (EMA weights) behind the action-queue contract of ``ChunkedPolicy``.

    Each query predicts T = ``n_future`` actions (and, for ``denoise`` / ``idm``, T frames) from the current
    frame, the normalised state (if the model was trained with one) and the instruction, whose tokens are
    computed once in ``set_instruction``. Actions are unnormalised with the run's normaliser (the IDM's own in
    ``idm`` mode) and clipped to ``action_space`` when one is given. Sampling noise comes from a generator
    re-seeded with ``seed`` at every ``reset()``, so an episode's rollout does not depend on the episodes
    before it.
    """

    def __init__(self, model: VideoActionDiT, normalizer: Normalizer | None, mode: str = "head",
                 n_action_steps: int | None = None, ddim_steps: int = 10, temporal_ensemble: float | None = None,
                 idm: tuple[InverseDynamicsModel, Normalizer] | None = None,
                 action_space: spaces.Space | None = None, seed: int = 0, name: str = "") -> None:
        cfg = model.config
        check_mode(mode, idm is not None)
        if n_action_steps is None:  # ensembling re-plans every step; otherwise execute the whole chunk
            n_action_steps = 1 if temporal_ensemble is not None else cfg.n_future
        try:
            super().__init__(n_action_steps, cfg.n_future, temporal_ensemble)
        except ValueError as err:
            raise UserError(str(err)) from None
        # Queries run the model eagerly under torch.inference_mode: on 1 CPU thread a `small` head query takes
        # ~7 ms (docs/benchmarks.md), within the 10 ms target, with no TorchScript (deprecated) or compile step.
        self.model = model.eval().requires_grad_(False)
        self.device = next(model.parameters()).device
        self.diffusion = Diffusion(model.config)
        self.diffusion.ddim_timesteps(ddim_steps)  # validates 1 <= steps <= K with a clear message
        self.mode, self.ddim_steps, self.seed, self.name = mode, ddim_steps, seed, name
        self.idm_name: str | None = None  # the IDM's run folder, for describe()
        self.idm, self.idm_normalizer = (idm[0].to(self.device).eval(), idm[1]) if idm else (None, None)
        self.action_normalizer = self.idm_normalizer if mode == "idm" else normalizer
        self.state_normalizer = normalizer
        if self.action_normalizer is None or (cfg.state_dim and normalizer is None):  # IDM runs always have one
            raise UserError(f"run folder {name or '(in memory)'} has no {ckpt.NORMALIZER}: it is incomplete")
        if self.idm is not None:
            self._check_idm(cfg)
        self.image_size = cfg.img_size
        self.action_dim = self.idm.config.action_dim if mode == "idm" else cfg.action_dim
        self.state_dim = cfg.state_dim or (self.idm.config.state_dim if self.idm is not None else 0)
        self.action_low = self.action_high = None
        if action_space is not None:
            self.set_action_space(action_space)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._tokens = model.text_encoder.tokenize([""])  # (1, L): the null instruction until one is set
        self.instruction = ""

    def _check_idm(self, cfg) -> None:
        icfg = self.idm.config
        if icfg.next_state:
            raise UserError("this IDM reads the state after each step (next_state), which generated frames do not "
                            "have: it labels recorded robot video (`gr2-sim label`). For --mode idm train one "
                            "without --set next_state=true")
        if icfg.img_size != cfg.img_size:
            raise UserError(f"the IDM reads {icfg.img_size}px frames but the video model predicts {cfg.img_size}px")
        if icfg.state_dim and cfg.state_dim and icfg.state_dim != cfg.state_dim:
            raise UserError(f"the IDM reads a {icfg.state_dim}-D state but the video model a {cfg.state_dim}-D one")

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, run_dir: str | Path, mode: str = "head", n_action_steps: int | None = None,
                        ddim_steps: int = 10, temporal_ensemble: float | None = None, device: str = "auto",
                        idm_run: str | Path | None = None, seed: int = 0, env: Any = None,
                        num_threads: int | None = None) -> GR2Policy:
        """Load a run folder's EMA weights, config and normaliser (and an IDM run's for ``mode='idm'``).

        ``env``, when given, is checked (``check_env_compat``) and its Box action space bounds the actions.
        ``num_threads`` sets ``torch.set_num_threads`` on CPU (default: :func:`default_threads`).
        """
        check_mode(mode, idm_run is not None)
        config = ckpt.load_config(run_dir)  # UserError for a missing or partial folder
        ckpt.check_dit_run(run_dir, config, f"GR2Policy (mode {mode!r})")
        if is_idm_run(config):
            raise UserError(f"{run_dir} is an inverse-dynamics run; pass it as --idm (idm_run=) and give the "
                            f"video model's run as --ckpt")
        if "model" not in config:
            raise UserError(f"{Path(run_dir) / ckpt.CONFIG} has no 'model' section: not a gr2-sim training run")
        stage = config.get("stage")
        if mode in ("head", "denoise") and stage not in (None, "action"):
            raise UserError(f"{run_dir} was trained with --stage {stage}: its action head never saw actions. "
                            f"Use a --stage action run, or mode 'idm' with an inverse-dynamics run")
        torch_device = resolve_device(device)
        if torch_device.type == "cpu":
            torch.set_num_threads(num_threads or default_threads())
        model = ckpt.load_dit(run_dir)
        idm = load_idm(idm_run) if idm_run is not None else None
        policy = cls(model.to(torch_device), ckpt.load_normalizer(run_dir), mode, n_action_steps, ddim_steps,
                     temporal_ensemble, idm, seed=seed, name=str(run_dir))
        policy.idm_name = str(idm_run) if idm_run is not None else None
        if env is not None:
            policy.attach_env(env)
        policy.warmup()
        return policy

    @torch.inference_mode()
    def warmup(self) -> None:
        """One throw-away forward pass (and IDM pass): the first call on CPU costs ~1 s of one-time set-up,
        which would otherwise land in the first measured query latency."""
        cfg, S = self.model.config, self.image_size
        cond = torch.zeros(1, 3, S, S, device=self.device)
        state = torch.zeros(1, cfg.state_dim, device=self.device) if cfg.state_dim else None
        future = torch.zeros(1, cfg.n_future, 3, S, S, device=self.device)
        t = torch.full((1,), self.diffusion.K - 1, dtype=torch.long, device=self.device)
        self.model(cond, future, t, self._tokens, state, need_video=self.mode != "head")
        if self.idm is not None:
            idm_state = torch.zeros(1, self.idm.config.state_dim, device=self.device)
            self.idm.chunk_actions(cond, future, idm_state if self.idm.config.state_dim else None)

    # ----------------------------------------------------------------------------------------- the contract
    def set_instruction(self, text: str) -> None:
        """Tokenize once per episode; every query reuses the (1, L) token tensor."""
        self.instruction = str(text)
        self._tokens = self.model.text_encoder.tokenize([self.instruction])

    def reset(self) -> None:
        """Clear the queue and re-seed the sampling noise; the instruction stays until set again."""
        super().reset()
        self.generator.manual_seed(self.seed)

    @torch.inference_mode()
    def predict_chunk(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """actions (T, A) float32 unnormalised (and clipped), frames (T, S, S, 3) uint8 or None in head mode."""
        cond, raw_state = self._inputs(obs)  # (1, 3, S, S), (1, D) or None
        state = self.state_normalizer.normalize_states(raw_state) if self.model.config.state_dim else None
        frames = None
        if self.mode == "head":
            actions = self.diffusion.head_actions(self.model, cond, self._tokens, state, self.generator)
        else:
            frames, actions = self.diffusion.ddim_sample(self.model, cond, self._tokens, state, self.ddim_steps,
                                                         generator=self.generator, return_actions=self.mode == "denoise")
            if self.mode == "idm":
                idm_state = self.idm_normalizer.normalize_states(raw_state) if self.idm.config.state_dim else None
                actions = self.idm.chunk_actions(cond, frames, idm_state)  # (1, T, A)
        actions = self.action_normalizer.unnormalize_actions(actions[0]).float().cpu().numpy()  # (T, A)
        actions = self.clip(actions)
        return actions.astype(np.float32), (tensor_to_frames(frames[0]) if frames is not None else None)

    def _inputs(self, obs: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """cond (1, 3, S, S) in [-1, 1] and the raw state (1, D) (or None): new tensors, obs is never written."""
        image = np.asarray(obs["image"])
        if image.shape != (self.image_size, self.image_size, 3) or image.dtype != np.uint8:
            raise UserError(f"obs['image'] must be ({self.image_size}, {self.image_size}, 3) uint8, "
                            f"got {image.shape} {image.dtype}; resize frames as gr2_sim.obs_adapter does")
        if not image.flags.writeable:  # torch.from_numpy warns on read-only arrays; 12 KB copy
            image = image.copy()
        cond = frames_to_tensor(image[None], self.device)
        if not self.state_dim:
            return cond, None
        state = np.asarray(obs["state"], np.float32).reshape(-1)
        if state.shape != (self.state_dim,):
            raise UserError(f"obs['state'] must have {self.state_dim} values, got shape {state.shape}")
        return cond, torch.tensor(state, device=self.device)[None]

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "type": "GR2Policy", "ckpt": self.name, "mode": self.mode,
                "horizon": self.chunk_size, "seed": self.seed, "params": self.model.num_params(),
                "device": str(self.device), "torch_threads": torch.get_num_threads()}
        if self.mode != "head":
            info["ddim_steps"] = self.ddim_steps
        if self.idm is not None:
            info["idm"] = self.idm_name
            info["idm_params"] = sum(p.numel() for p in self.idm.parameters())
        return info
