"""Training windows over loaded episodes, and the normaliser fitted on the training demos.

A window starts at frame ``o_t`` of an episode: the conditioning frame ``o_t``, the T future frames
``o_{t+s}, o_{t+2s}, .., o_{t+Ts}`` (stride ``s``), and the action chunk ``a_t .. a_{t+T-1}`` (the action
that leads into each future frame when ``s = 1``). Past an episode's end the last frame and the last action
are repeated (the arm has stopped; the task is done). All windows are gathered from in-memory arrays with
vectorised indexing: no worker processes, no per-sample Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from gr2_sim.data import EpisodeArrays
from gr2_sim.device import to_device
from gr2_sim.errors import UserError
from gr2_sim.text import tokenize


@dataclass
class Normalizer:
    """Per-dimension mean/std of actions and states, fitted on the training demos; saved in the run folder."""

    action_mean: np.ndarray  # (A,)
    action_std: np.ndarray  # (A,)
    state_mean: np.ndarray  # (S,)
    state_std: np.ndarray  # (S,)

    @classmethod
    def fit(cls, episodes: EpisodeArrays, min_std: float = 1e-2) -> Normalizer:
        actions = episodes.actions if episodes.actions is not None else np.zeros((1, 0), np.float32)
        states = episodes.states
        return cls(actions.mean(0), np.maximum(actions.std(0), min_std),
                   states.mean(0) if len(states) else np.zeros(states.shape[1], np.float32),
                   np.maximum(states.std(0), min_std) if len(states) else np.ones(states.shape[1], np.float32))

    def normalize_actions(self, a):
        return (a - _like(self.action_mean, a)) / _like(self.action_std, a)

    def unnormalize_actions(self, a):
        return a * _like(self.action_std, a) + _like(self.action_mean, a)

    def normalize_states(self, s):
        return (s - _like(self.state_mean, s)) / _like(self.state_std, s)

    def to_json(self) -> str:
        return json.dumps({k: np.asarray(v, np.float64).tolist() for k, v in self.__dict__.items()}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Normalizer:
        d = json.loads(text)
        return cls(**{k: np.asarray(d[k], np.float32) for k in ("action_mean", "action_std", "state_mean", "state_std")})


def _like(v: np.ndarray, x):
    return torch.as_tensor(v, dtype=x.dtype, device=x.device) if isinstance(x, torch.Tensor) else v.astype(x.dtype)


def frames_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [-1, 1]."""
    x = to_device(torch.from_numpy(np.ascontiguousarray(images)), device)  # uint8 over the bus; float on device
    return x.movedim(-1, -3).float().div_(127.5).sub_(1.0)


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, 3)``."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(-3, -1).cpu().numpy()


class WindowSampler:
    """Random batches of training windows from :class:`EpisodeArrays`.

    ``sample(batch_size, generator)`` returns a dict of tensors::

        cond     (B, 3, H, W)     float in [-1, 1]   the conditioning frame o_t
        future   (B, T, 3, H, W)  float in [-1, 1]   o_{t+s} .. o_{t+Ts}
        actions  (B, T, A)        normalised         a_t .. a_{t+T-1}    (absent for video-only data)
        state    (B, S)           normalised         proprioception at o_t (absent unless use_state)
        text     (B, L)           long               instruction tokens (all padding = null)
    """

    def __init__(self, episodes: EpisodeArrays, n_future: int, normalizer: Normalizer | None,
                 max_text_len: int, vocab_size: int, stride: int = 1, use_actions: bool = True,
                 use_text: bool = True, use_state: bool = True, aux: AuxTargets | None = None,
                 future_state: bool = False):
        self.aux = aux
        if episodes.images is None:
            raise ValueError("WindowSampler needs episodes loaded with images")
        self.ep = episodes
        self.n_future, self.stride = n_future, stride
        self.normalizer = normalizer
        self.use_actions = use_actions and episodes.actions is not None
        self.use_state = use_state and episodes.states.shape[1] > 0
        self.future_state = future_state and self.use_state  # the states at the future frames too (B, T, S)
        lengths = episodes.episode_ends - episodes.episode_starts
        # every frame but the terminal one starts a window
        self.episode_of = np.repeat(np.arange(len(lengths)), np.maximum(lengths - 1, 0))
        self.start_frames = np.concatenate([np.arange(s, e - 1) for s, e in
                                            zip(episodes.episode_starts, episodes.episode_ends, strict=True)]
                                           ) if len(lengths) else np.zeros(0, np.int64)
        if len(self.start_frames) == 0:
            raise ValueError("no training windows: every episode has fewer than 2 frames")
        texts = episodes.instructions if use_text else [""] * len(lengths)
        self.text_tokens = tokenize(texts, max_text_len, vocab_size)  # (E, L)

    def __len__(self) -> int:
        return len(self.start_frames)

    def indices(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Frame/action indices of the windows numbered ``rows``."""
        ep = self.ep
        e = self.episode_of[rows]
        f0 = self.start_frames[rows]
        k = np.arange(1, self.n_future + 1)
        future = np.minimum(f0[:, None] + k * self.stride, ep.episode_ends[e][:, None] - 1)
        out = {"episode": e, "cond": f0, "future": future}
        if self.use_actions:
            a0 = ep.action_starts[e] + (f0 - ep.episode_starts[e])
            out["actions"] = np.minimum(a0[:, None] + np.arange(self.n_future), ep.action_ends[e][:, None] - 1)
        return out

    def batch(self, rows: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        idx = self.indices(rows)
        ep = self.ep
        out = {"cond": frames_to_tensor(ep.images[idx["cond"]], device),
               "future": frames_to_tensor(ep.images[idx["future"]], device),
               "text": to_device(self.text_tokens[idx["episode"]], device)}
        if self.use_state:
            state = to_device(torch.from_numpy(ep.states[idx["cond"]]), device)
            out["state"] = self.normalizer.normalize_states(state) if self.normalizer is not None else state
        if self.future_state:
            state = to_device(torch.from_numpy(ep.states[idx["future"]]), device)  # (B, T, S)
            out["future_state"] = self.normalizer.normalize_states(state) if self.normalizer is not None else state
        if self.use_actions:
            actions = to_device(torch.from_numpy(ep.actions[idx["actions"]]), device)
            out["actions"] = self.normalizer.normalize_actions(actions) if self.normalizer is not None else actions
        if self.aux is not None:
            out["aux"] = self.aux.normalized(idx["cond"], device)
        return out

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu"):
        rows = torch.randint(len(self), (batch_size,), generator=generator).numpy()
        return self.batch(rows, device)

    def fixed_rows(self, n: int, seed: int = 0) -> np.ndarray:
        """A deterministic set of ``n`` windows (for validation)."""
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(len(self), size=min(n, len(self)), replace=False))


@dataclass
class AuxTargets:
    """Per-frame auxiliary training targets (privileged: seen in training only, never by a policy), e.g. the
    object positions that ``object_state=True`` appends to the state; standardised with the training
    episodes' mean and std."""

    values: np.ndarray  # (F, K) float32, aligned with the episodes' frames
    mean: np.ndarray  # (K,)
    std: np.ndarray  # (K,)

    def normalized(self, frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        return to_device(torch.from_numpy((self.values[frames] - self.mean) / self.std).float(), device)


def split_aux_state(episodes: EpisodeArrays, k: int, source: str):
    """(episodes with the last ``k`` state values removed, AuxTargets of those values, standardised with their
    own mean and std)."""
    import dataclasses

    S = episodes.states.shape[1]
    if k >= S:
        raise UserError(f"--aux-state {k}: {source} stores {S} state values per frame, so at most {S - 1} can be "
                        f"auxiliary targets; collect the data with --env-kwargs '{{\"object_state\": true}}' "
                        f"(6 values: the named object's and the goal's positions), then --aux-state 6")
    values = episodes.states[:, S - k:].astype(np.float32)
    return (dataclasses.replace(episodes, states=np.ascontiguousarray(episodes.states[:, :S - k])),
            AuxTargets(values, values.mean(0), np.maximum(values.std(0), 1e-3)))


def random_shift(frames: list[torch.Tensor], pad: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shift every sample's frames by the same random (dy, dx) in [-pad, pad] pixels, edges replicated (DrQ's
    augmentation, Kostrikov et al. 2020; diffusion_policy and robomimic use the same random crop). Each tensor
    is (B, ..., C, H, W); sample b of every tensor gets the same shift, so the current and future frames of a
    window stay aligned."""
    if pad <= 0:
        return frames
    B = frames[0].shape[0]
    offsets = torch.randint(0, 2 * pad + 1, (B, 2), generator=generator).tolist()
    out = []
    for x in frames:
        lead = x.shape[1:-3]
        flat = x.reshape(B, -1, *x.shape[-2:])  # (B, stacked channels, H, W)
        padded = torch.nn.functional.pad(flat, (pad, pad, pad, pad), mode="replicate")
        H, W = x.shape[-2:]
        shifted = torch.stack([padded[b, :, dy:dy + H, dx:dx + W] for b, (dy, dx) in enumerate(offsets)])
        out.append(shifted.reshape(B, *lead, *x.shape[-3:]))
    return out
