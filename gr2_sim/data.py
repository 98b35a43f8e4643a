"""The HDF5 episode store: one on-disk format for expert demos, action-free robot video and synthetic video.

Layout (robomimic's, plus a terminal frame)::

    data/                      attrs: format_version, env_id, env_kwargs (JSON), kind, image_size,
                                      state_dim, action_dim, total, next_attempt, config (JSON)
      demo_<i>/                attrs: num_samples (= N), num_frames (= N + 1), instruction, env_id, seed,
                                      attempt, success, complete (written last)
        obs/image              (N + 1, H, W, 3) uint8, gzip, one chunk per frame
        obs/state              (N + 1, S) float32 (S may be 0: synthetic video has no state)
        actions                (N, A) float32; absent for kind 'robot_video' and 'synthetic'
        rewards                (N,) float32
        dones                  (N,) uint8, 1 on the last transition
    mask/train, mask/valid     episode keys as bytes (b"demo_0", ...), disjoint

Frames and actions: an episode of N transitions stores N + 1 observations ``o_0 .. o_N`` and N actions
``a_0 .. a_{N-1}``; ``a_t`` is the action taken at ``o_t`` and ``o_{t+1}`` is what it led to. The terminal
frame is kept because it is the one that shows the task solved. ``num_samples`` is N (transitions, as in
robomimic); ``num_frames`` is N + 1. Video-only data follows the same rule (T frames, T - 1 rewards).

Crash safety: HDF5 files are not safe to modify in place (a kill mid-write can leave the whole file
unreadable), so :class:`DatasetWriter` never does: it writes a copy and renames it over the file (see its
docstring). Every file on disk is whole, masks included. Groups without the ``complete`` mark (left by the
in-place writer of earlier versions) are skipped by the loader and dropped by the next commit.

Seeds: data collection uses seeds below :data:`TEST_SEED_START`; evaluation uses seeds from it upward.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gr2_sim.errors import UserError

FORMAT_VERSION = 1
TEST_SEED_START = 1_000_000  # evaluation episodes use seeds >= this; data seeds must stay below it
VALID_EVERY = 10  # demo_i is a validation episode when i % VALID_EVERY == VALID_EVERY - 1 (10%)
KINDS = ("demos", "robot_video", "synthetic")  # only 'demos' carries actions
MAX_ATTR_CHARS = 16_000  # longer per-episode text (e.g. synthetic clip metadata) is stored as a dataset
IMAGE_COMPRESSION = 4  # gzip level: near the best ratio for rendered frames at a fraction of level 9's cost


@dataclass
class Episode:
    """One episode in memory, as the writer takes it (T = N + 1 frames, N transitions)."""

    images: np.ndarray  # (T, H, W, 3) uint8
    states: np.ndarray  # (T, S) float32
    actions: np.ndarray | None  # (N, A) float32, or None for video-only data
    rewards: np.ndarray  # (N,) float32
    dones: np.ndarray  # (N,) 0/1
    instruction: str = ""
    seed: int = -1
    success: bool = False
    extra_attrs: dict[str, Any] = field(default_factory=dict)  # more per-episode attrs (str/number/bool)


@dataclass
class EpisodeArrays:
    """Episodes concatenated into flat arrays (the loader's output).

    Episode ``i`` owns frames ``episode_starts[i]:episode_ends[i]`` and actions/rewards
    ``action_starts[i]:action_ends[i]`` (one fewer: see the module docstring), so action ``action_starts[i]
    + t`` was taken at frame ``episode_starts[i] + t``.
    """

    images: np.ndarray | None  # (F, H, W, 3) uint8; None when loaded with load_images=False
    states: np.ndarray  # (F, S) float32
    actions: np.ndarray | None  # (F - E, A) float32; None for video-only data
    rewards: np.ndarray  # (F - E,) float32
    episode_starts: np.ndarray  # (E,) int64 frame index of each episode's first frame
    episode_ends: np.ndarray  # (E,) int64, exclusive
    action_starts: np.ndarray  # (E,) int64
    action_ends: np.ndarray  # (E,) int64, exclusive
    instructions: list[str]  # (E,)
    seeds: np.ndarray  # (E,) int64
    successes: np.ndarray  # (E,) bool
    demo_keys: list[str]  # (E,) e.g. "demo_12"
    env_id: str
    kind: str
    image_size: int
    env_kwargs: dict = field(default_factory=dict)  # the gym.make keyword arguments it was made with

    @property
    def num_episodes(self) -> int:
        return len(self.demo_keys)

    def episode(self, i: int) -> dict[str, Any]:
        """Episode ``i`` as a dict of array views (images, states, actions, rewards, instruction)."""
        f, a = slice(self.episode_starts[i], self.episode_ends[i]), slice(self.action_starts[i], self.action_ends[i])
        return {"images": None if self.images is None else self.images[f], "states": self.states[f],
                "actions": None if self.actions is None else self.actions[a], "rewards": self.rewards[a],
                "instruction": self.instructions[i], "seed": int(self.seeds[i]), "success": bool(self.successes[i])}


# ----------------------------------------------------------------------------- file access helpers
def open_h5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """``h5py.File`` that turns unreadable files into a :class:`UserError` naming the file."""
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot open it as a gr2-sim dataset: {_explain(str(err))}") from None


def _explain(h5_message: str) -> str:
    """HDF5's open error in words (its messages read "Unable to ... (the detail)")."""
    detail = h5_message[h5_message.find("(") + 1:h5_message.rfind(")")] if "(" in h5_message else h5_message
    if "signature not found" in detail:
        return "not an HDF5 file; delete it or write with --overwrite"
    if "truncated file" in detail:
        return f"the file is truncated ({detail}), e.g. a partial copy; delete it or write with --overwrite"
    if "unable to lock file" in h5_message.lower():
        return "it is open for writing in another process; wait for that process or stop it"
    return detail


def data_dims(path: str | os.PathLike) -> dict[str, int]:
    """``{"image_size", "state_dim", "action_dim"}`` of a dataset file (-1: none recorded, e.g. no actions)."""
    with open_h5(path) as f:
        attrs = _data_group(f, path).attrs
        return {name: int(attrs[name]) for name in ("image_size", "state_dim", "action_dim")}


def _data_group(f: h5py.File, path) -> h5py.Group:
    if "data" not in f or "format_version" not in f["data"].attrs:
        raise UserError(f"{path}: an HDF5 file but not a gr2-sim dataset (no data/ group with a format_version)")
    version = int(f["data"].attrs["format_version"])
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: dataset format version {version} is newer than this gr2-sim ({FORMAT_VERSION})")
    return f["data"]


def _demo_index(key: str) -> int:
    return int(key.split("_", 1)[1])


def _complete_keys(data: h5py.Group) -> list[str]:
    """Keys of fully written episodes, sorted by episode index."""
    keys = [k for k in data.keys() if k.startswith("demo_") and data[k].attrs.get("complete", False)]
    return sorted(keys, key=_demo_index)


def split_keys(keys: list[str]) -> dict[str, list[str]]:
    """Deterministic train/valid split: every VALID_EVERY-th episode by index is for validation.

    The rule depends only on an episode's index, so it stays the same as a file grows. A file with fewer
    than VALID_EVERY episodes (but at least two) uses its last episode for validation.
    """
    valid = [k for k in keys if _demo_index(k) % VALID_EVERY == VALID_EVERY - 1]
    if not valid and len(keys) >= 2:
        valid = [max(keys, key=_demo_index)]
    return {"train": [k for k in keys if k not in set(valid)], "valid": valid}


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


# ----------------------------------------------------------------------------- writer
COMMIT_EVERY = 10.0  # seconds: the most work a hard kill can lose (while copies stay cheap, see below)
MAX_PENDING_BYTES = 512 * 2**20  # raw episode bytes held in memory before a commit is forced


class DatasetWriter:
    """Adds whole episodes to a dataset file; the calling process is the only writer.

    HDF5 is not crash-safe: a process killed while it modifies a file can leave metadata that points past the
    end of the file, and then nothing in it can be read. So the file is never modified in place. Episodes are
    held in memory and *committed*: the file is copied, the new episodes (and fresh train/valid masks) are
    written to the copy, and the copy is renamed over the file. A reader, or a kill at any moment, sees either
    the old file or the new one, both whole. Commits happen at ``close`` and whenever ``commit_every`` seconds
    (and at least four times the last commit's duration, which bounds the copying to a fifth of the run) have
    passed since the last one (``commit_every=0``: after every episode); a hard kill loses only the uncommitted episodes, which a resumed run (same
    seeds) makes again.

    Opening an existing file resumes it if it was made for the same ``env_id``, ``env_kwargs``, ``kind``,
    ``image_size`` and ``config``; otherwise a :class:`UserError`, unless ``overwrite`` (which starts a new
    file). Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike, *, env_id: str, env_kwargs: dict | None = None, kind: str = "demos",
                 image_size: int = 64, config: dict | None = None, overwrite: bool = False,
                 commit_every: float = COMMIT_EVERY):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.path = Path(path)
        self.kind = kind
        self.image_size = int(image_size)
        self.commit_every = float(commit_every)
        header = {"env_id": env_id, "env_kwargs": _json(env_kwargs or {}), "kind": kind,
                  "image_size": self.image_size, "config": _json(config or {})}
        if overwrite or not self.path.exists():
            self._create(header)
        with open_h5(self.path, "r") as f:
            data = _data_group(f, self.path)
            self._check_header(data, header)
            keys = _complete_keys(data)
            attempts = [int(data[k].attrs.get("attempt", -1)) for k in keys]
            self.total = len(keys)
            self._next_index = _demo_index(keys[-1]) + 1 if keys else 0
            self.next_attempt = max([int(data.attrs["next_attempt"])] + [a + 1 for a in attempts])
            self._env_id = str(data.attrs["env_id"])
            self._dims = {name: int(data.attrs[name]) for name in ("state_dim", "action_dim")}
            clean = "mask" in f and len(keys) == sum(k.startswith("demo_") for k in data.keys())
        self._pending: list[tuple[str, Episode, int]] = []
        self._pending_bytes = 0
        self._committed_attempt = self.next_attempt if clean else -1  # -1: the first commit rewrites the file
        self._last_commit, self._commit_seconds = time.monotonic(), 0.0
        self.closed = False

    def _create(self, header: dict) -> None:
        """Write an empty dataset to a temporary name, then rename: a new file appears whole or not at all."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            data.attrs.update(header)
            data.attrs.update({"format_version": FORMAT_VERSION, "total": 0, "next_attempt": 0,
                               "state_dim": -1, "action_dim": -1})
            for name in ("train", "valid"):
                f.create_dataset(f"mask/{name}", data=np.array([], dtype="S32"))
        os.replace(tmp, self.path)

    def _check_header(self, data: h5py.Group, header: dict) -> None:
        attrs = data.attrs
        found = {k: attrs.get(k) for k in header}
        found["image_size"] = int(found["image_size"]) if found["image_size"] is not None else None
        for k in ("env_kwargs", "config"):  # compare JSON by value, not by spelling
            found[k] = json.loads(found[k] or "{}")
        wanted = dict(header, env_kwargs=json.loads(header["env_kwargs"]), config=json.loads(header["config"]))
        diff = [(k, found[k], wanted[k]) for k in header if k != "config" and found[k] != wanted[k]]
        diff += [(k, found["config"].get(k), wanted["config"].get(k))
                 for k in sorted(set(found["config"]) | set(wanted["config"]))
                 if found["config"].get(k) != wanted["config"].get(k)]
        if diff:
            what = "; ".join(f"{k} is {old!r} there, {new!r} here" for k, old, new in diff)
            raise UserError(f"{self.path} was made differently ({what}); pass --overwrite to replace it or "
                            f"choose another --out file")

    def _check_episode(self, ep: Episode) -> None:
        t, s = len(ep.images), self.image_size
        if ep.images.dtype != np.uint8 or ep.images.shape[1:] != (s, s, 3) or t < 1:
            raise ValueError(f"images must be (T, {s}, {s}, 3) uint8 with T >= 1, got {ep.images.shape} {ep.images.dtype}")
        if ep.states.ndim != 2 or len(ep.states) != t:
            raise ValueError(f"states must be (T={t}, S), got {ep.states.shape}")
        if (ep.actions is None) != (self.kind != "demos"):
            raise ValueError(f"kind {self.kind!r} {'requires' if self.kind == 'demos' else 'takes no'} actions")
        if ep.actions is not None and (ep.actions.ndim != 2 or len(ep.actions) != t - 1):
            raise ValueError(f"actions must be (N={t - 1}, A) for {t} frames, got {ep.actions.shape}")
        if ep.rewards.shape != (t - 1,) or ep.dones.shape != (t - 1,):
            raise ValueError(f"rewards and dones must be (N={t - 1},), got {ep.rewards.shape}, {ep.dones.shape}")
        for name, dim in (("state_dim", ep.states.shape[1]), ("action_dim", None if ep.actions is None else ep.actions.shape[1])):
            known = self._dims[name]
            if dim is not None and known >= 0 and known != dim:
                raise ValueError(f"{name} {dim} differs from the {known} of the episodes already in {self.path}")

    def append(self, ep: Episode, attempt: int | None = None) -> str:
        """Queue one episode for the next commit and return its key. ``attempt`` is recorded so a resumed run
        knows where to continue."""
        if self.closed:
            raise ValueError(f"{self.path}: the writer is closed")
        self._check_episode(ep)
        key = f"demo_{self._next_index}"
        if self.total == 0:
            self._dims = {"state_dim": ep.states.shape[1], "action_dim": -1 if ep.actions is None else ep.actions.shape[1]}
        self._pending.append((key, ep, -1 if attempt is None else int(attempt)))
        self._pending_bytes += ep.images.nbytes + ep.states.nbytes
        self.total += 1
        self._next_index += 1
        self.record_attempt(attempt)
        return key

    def record_attempt(self, attempt: int | None) -> None:
        """Note that ``attempt`` is done (kept or not): a resumed run starts after it. Commits when one is due."""
        if attempt is not None:
            self.next_attempt = max(self.next_attempt, int(attempt) + 1)
        waited = time.monotonic() - self._last_commit
        due = self.commit_every == 0 or waited >= max(self.commit_every, 4 * self._commit_seconds)
        if due or self._pending_bytes >= MAX_PENDING_BYTES:
            self.commit()

    def commit(self) -> None:
        """Write everything queued: copy the file, add to the copy, rename it over the file."""
        if not self._pending and self.next_attempt == self._committed_attempt:
            return
        t0 = time.monotonic()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "r+") as f:
                data = f["data"]
                for key in [k for k in data.keys() if k.startswith("demo_")]:  # a file from an older writer
                    if not data[key].attrs.get("complete", False):
                        del data[key]
                for key, ep, attempt in self._pending:
                    _write_episode(data.create_group(key), ep, attempt, self._env_id)
                data.attrs.update(self._dims)
                data.attrs["total"] = self.total
                data.attrs["next_attempt"] = self.next_attempt
                if "mask" in f:
                    del f["mask"]
                for name, keys in split_keys(_complete_keys(data)).items():
                    f.create_dataset(f"mask/{name}", data=np.array([k.encode() for k in keys], dtype="S32"))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._pending, self._pending_bytes = [], 0
        self._committed_attempt = self.next_attempt
        self._last_commit = time.monotonic()
        self._commit_seconds = self._last_commit - t0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.commit()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_episode(group: h5py.Group, ep: Episode, attempt: int, env_id: str) -> None:
    t = len(ep.images)
    obs = group.create_group("obs")
    obs.create_dataset("image", data=ep.images, chunks=(1, *ep.images.shape[1:]),
                       compression="gzip", compression_opts=IMAGE_COMPRESSION)
    obs.create_dataset("state", data=np.asarray(ep.states, np.float32))
    if ep.actions is not None:
        group.create_dataset("actions", data=np.asarray(ep.actions, np.float32))
    group.create_dataset("rewards", data=np.asarray(ep.rewards, np.float32))
    group.create_dataset("dones", data=np.asarray(ep.dones, np.uint8))
    group.attrs.update({"num_samples": t - 1, "num_frames": t, "instruction": ep.instruction, "env_id": env_id,
                        "seed": int(ep.seed), "success": bool(ep.success), "attempt": attempt})
    for name, value in ep.extra_attrs.items():  # HDF5 attributes must stay under 64 KB: long text
        if isinstance(value, str) and len(value) > MAX_ATTR_CHARS:  # becomes a scalar string dataset
            group.create_dataset(name, data=value)
        else:
            group.attrs[name] = value
    group.attrs["complete"] = True


# ----------------------------------------------------------------------------- reading
def _read_masks(f: h5py.File, keys: list[str]) -> dict[str, list[str]]:
    if "mask" in f and all(n in f["mask"] for n in ("train", "valid")):
        stored = {n: [k.decode() if isinstance(k, bytes) else str(k) for k in f["mask"][n][()]] for n in ("train", "valid")}
        if set(stored["train"]) | set(stored["valid"]) == set(keys):
            return {n: sorted(v, key=_demo_index) for n, v in stored.items()}
    return split_keys(keys)


def load_episodes(path: str | os.PathLike, max_demos: int | None = None, split: str = "train",
                  load_images: bool = True) -> EpisodeArrays:
    """Load the episodes of one split into flat arrays (see :class:`EpisodeArrays`).

    ``split`` is 'train', 'valid' or 'all'. ``max_demos`` takes the first N episodes of that split by episode
    index, so 50 demos are a subset of 200, which are a subset of 1000; asking for more than the split holds
    is a :class:`UserError`.
    """
    if split not in ("train", "valid", "all"):
        raise UserError(f"split must be 'train', 'valid' or 'all', got {split!r}")
    with open_h5(path, "r") as f:
        data = _data_group(f, path)
        keys = _complete_keys(data)
        chosen = keys if split == "all" else _read_masks(f, keys)[split]
        if max_demos is not None:
            if max_demos < 1:
                raise UserError(f"max_demos must be at least 1, got {max_demos}")
            if max_demos > len(chosen):
                raise UserError(f"{path} has only {len(chosen)} {split} episodes ({len(keys)} in all), "
                                f"fewer than the {max_demos} asked for; collect more with --episodes")
            chosen = chosen[:max_demos]
        try:
            return _read(data, chosen, load_images)
        except (OSError, KeyError) as err:
            raise UserError(f"{path}: damaged dataset, could not read it ({err})") from None


def iter_images(path: str | os.PathLike, keys: list[str]):
    """The frames of the episodes ``keys`` of ``path``, one (T, H, W, 3) uint8 array at a time: with
    ``load_episodes(..., load_images=False)`` a whole file is walked with one episode's frames in memory."""
    with open_h5(path, "r") as f:
        data = _data_group(f, path)
        for key in keys:
            try:
                yield data[key]["obs/image"][()]
            except (OSError, KeyError) as err:
                raise UserError(f"{path}: damaged dataset, could not read {key} ({err})") from None


def concat_episodes(first: EpisodeArrays, *more: EpisodeArrays) -> EpisodeArrays:
    """The episodes of several loads as one (e.g. demonstrations and IDM-labelled robot video): the same image
    size, state size and action size, all with actions or all without (a UserError otherwise). env_id, kind
    and env_kwargs are the first's; demo keys are prefixed by the part's position after the first."""
    parts = [first, *more]
    for part in more:
        if part.image_size != first.image_size or part.states.shape[1] != first.states.shape[1]:
            raise UserError(f"cannot join episodes of {part.image_size}px frames and {part.states.shape[1]}-D states "
                            f"to {first.image_size}px and {first.states.shape[1]}-D ones")
        if (part.actions is None) != (first.actions is None) or (
                part.actions is not None and part.actions.shape[1] != first.actions.shape[1]):
            raise UserError("cannot join episodes with and without actions, or of different action sizes")
        if (part.images is None) != (first.images is None):
            raise UserError("cannot join episodes loaded with and without images")
    frame_offsets = np.cumsum([0] + [len(p.states) for p in parts[:-1]])
    action_offsets = np.cumsum([0] + [len(p.rewards) for p in parts[:-1]])
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return EpisodeArrays(
        images=None if first.images is None else cat("images"), states=cat("states"),
        actions=None if first.actions is None else cat("actions"), rewards=cat("rewards"),
        episode_starts=np.concatenate([p.episode_starts + o for p, o in zip(parts, frame_offsets, strict=True)]),
        episode_ends=np.concatenate([p.episode_ends + o for p, o in zip(parts, frame_offsets, strict=True)]),
        action_starts=np.concatenate([p.action_starts + o for p, o in zip(parts, action_offsets, strict=True)]),
        action_ends=np.concatenate([p.action_ends + o for p, o in zip(parts, action_offsets, strict=True)]),
        instructions=[text for p in parts for text in p.instructions], seeds=cat("seeds"), successes=cat("successes"),
        demo_keys=[(f"{i}/" if i else "") + key for i, p in enumerate(parts) for key in p.demo_keys],
        env_id=first.env_id, kind=first.kind, image_size=first.image_size, env_kwargs=first.env_kwargs)


def _read(data: h5py.Group, keys: list[str], load_images: bool) -> EpisodeArrays:
    attrs = data.attrs
    size, state_dim, action_dim = int(attrs["image_size"]), max(int(attrs["state_dim"]), 0), int(attrs["action_dim"])
    has_actions = attrs["kind"] == "demos"
    groups = [data[k] for k in keys]
    meta = [dict(g.attrs) for g in groups]
    lengths = np.array([int(m["num_frames"]) for m in meta], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    a_ends = np.cumsum(lengths - 1)
    a_starts = a_ends - (lengths - 1)
    frames, transitions = int(ends[-1]) if len(keys) else 0, int(a_ends[-1]) if len(keys) else 0
    images = np.empty((frames, size, size, 3), np.uint8) if load_images else None
    states = np.empty((frames, state_dim), np.float32)
    actions = np.empty((transitions, max(action_dim, 0)), np.float32) if has_actions else None
    rewards = np.empty(transitions, np.float32)
    for i, g in enumerate(groups):
        f, a = slice(starts[i], ends[i]), slice(a_starts[i], a_ends[i])
        if images is not None:
            images[f] = g["obs/image"][()]
        states[f] = g["obs/state"][()]
        if actions is not None:
            actions[a] = g["actions"][()]
        rewards[a] = g["rewards"][()]
    return EpisodeArrays(
        images=images, states=states, actions=actions, rewards=rewards, episode_starts=starts, episode_ends=ends,
        action_starts=a_starts, action_ends=a_ends, instructions=[str(m["instruction"]) for m in meta],
        seeds=np.array([int(m["seed"]) for m in meta], np.int64),
        successes=np.array([bool(m["success"]) for m in meta], bool), demo_keys=list(keys),
        env_id=str(attrs["env_id"]), kind=str(attrs["kind"]), image_size=size,
        env_kwargs=json.loads(attrs["env_kwargs"]) if "env_kwargs" in attrs else {})


def describe(path: str | os.PathLike) -> str:
    """A few lines summarising a dataset file: what it holds, how much, and how it splits."""
    with open_h5(path, "r") as f:
        data = _data_group(f, path)
        a, keys = dict(data.attrs), _complete_keys(data)
        splits = _read_masks(f, keys)
        frames = [int(data[k].attrs["num_frames"]) for k in keys]
        success = [bool(data[k].attrs["success"]) for k in keys]
        instructions = sorted({str(data[k].attrs["instruction"]) for k in keys})
        partial = sum(1 for k in data.keys() if k.startswith("demo_")) - len(keys)
        valid_actions = [data[k]["actions"][()] for k in splits["valid"] if "actions" in data[k]]
    lines = [
        f"{path}: {a['kind']} for {a['env_id']} {a['env_kwargs']} (format v{int(a['format_version'])})",
        f"  episodes: {len(keys)} ({len(splits['train'])} train, {len(splits['valid'])} valid)"
        + (f", {partial} partially written (ignored)" if partial else ""),
        f"  frames: {sum(frames)} (episode length {min(frames, default=0)}-{max(frames, default=0)}), "
        f"image {int(a['image_size'])}px, state dim {max(int(a['state_dim']), 0)}, "
        f"action dim {int(a['action_dim']) if a['kind'] == 'demos' else 'none'}",
        f"  successful: {sum(success)}/{len(keys)}; attempts so far: {int(a['next_attempt'])}",
        f"  instructions ({len(instructions)} distinct): " + "; ".join(repr(s) for s in instructions[:5])
        + (" ..." if len(instructions) > 5 else ""),
    ]
    if valid_actions:  # the yardstick for a policy's held-out action MSE
        variance = float(np.concatenate(valid_actions).var(axis=0).mean())
        lines.append(f"  valid actions: variance {variance:.4f} per dimension (the MSE of always predicting "
                     f"their mean action)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- `gr2-sim describe FILE`
def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="dataset files (.hdf5)")


def run(args) -> int:
    for path in args.files:
        print(describe(path))
    return 0
