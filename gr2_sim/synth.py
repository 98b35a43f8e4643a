"""``gr2-sim synth``: render synthetic non-robot physics clips (``envs.synthetic``) into a dataset file.

The file has the same format as robot data (:mod:`gr2_sim.data`) with kind 'synthetic': frames only, no
actions, an empty instruction and a state of size 0 (``obs/state`` is (T, 0)). Each episode records the
clip's ``clip_kind`` and its ``meta`` (JSON). Clip ``i`` uses seed ``--seed + i``; clips are written in
order whatever ``--workers`` is, and rerunning the command on a partial file resumes it.

``--kinds`` picks the clip kinds each clip is drawn from (default: the five without tools, ``envs.synthetic.KINDS``);
``--tools`` adds the tool clips (a stick or hook pushing or pulling objects), so phase 1 can be rendered with and
without them. A non-default mix is recorded in the file's ``env_kwargs``: a file is only resumed with the same mix.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from gr2_sim.collect import OrderedPool, StopSignals, check_common, check_seed_range
from gr2_sim.data import COMMIT_EVERY, DatasetWriter, Episode
from gr2_sim.errors import UserError

SYNTH_ENV_ID = "envs.synthetic"  # stands in for an env id in the file's attrs


@dataclass(frozen=True)
class SynthSpec:
    frames: int  # T frames per clip
    image_size: int
    seed: int  # clip i uses seed + i
    kinds: tuple[str, ...] | None = None  # clip kinds drawn from; None: envs.synthetic.KINDS


def _to_json(value) -> str:
    return json.dumps(value, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


class ClipRunner:
    """``runner(i)``: clip ``i`` as a video-only :class:`Episode`."""

    def __init__(self, spec: SynthSpec):
        try:
            from envs.synthetic import make_clip  # imported here: only this command needs it
        except ImportError as err:
            raise UserError(f"synthetic video is not available: cannot import envs.synthetic ({err})") from None

        self.spec = spec
        self.make_clip = make_clip

    def __call__(self, index: int) -> Episode:
        seed = self.spec.seed + index
        kinds = {"kinds": self.spec.kinds} if self.spec.kinds is not None else {}
        clip = self.make_clip(seed, self.spec.frames, self.spec.image_size, **kinds)
        frames = np.asarray(clip.frames, dtype=np.uint8)
        n = len(frames) - 1
        dones = np.zeros(n, np.uint8)
        if n:
            dones[-1] = 1
        return Episode(images=frames, states=np.zeros((len(frames), 0), np.float32), actions=None,
                       rewards=np.zeros(n, np.float32), dones=dones, instruction="", seed=seed, success=False,
                       extra_attrs={"clip_kind": str(clip.kind), "meta": _to_json(dict(clip.meta or {}))})


def add_arguments(parser) -> None:
    parser.add_argument("--clips", type=int, required=True, help="clips the file should hold when done")
    parser.add_argument("--frames", type=int, required=True, help="frames per clip")
    parser.add_argument("--out", required=True, help="output .hdf5 file; an existing one is resumed")
    parser.add_argument("--workers", type=int, default=mp.cpu_count(), help="worker processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="clip i uses seed SEED + i")
    parser.add_argument("--image-size", type=int, default=64, help="frame size in pixels (square)")
    parser.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                        help="clip kinds to draw from: bounce fall collide roll occlude tool capabilities "
                             "(default: the first five, no tool clips; capabilities: scenes like the five "
                             "capability probes, to train a reference model on their distribution)")
    parser.add_argument("--tools", action="store_true", help="add the tool clips to the kinds (phase 1 with tools)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE if it was made differently")
    parser.add_argument("--commit-every", type=float, default=COMMIT_EVERY, metavar="SECONDS",
                        help="save finished episodes to FILE at least this often (a hard kill loses at most this much)")


def synth_kinds(kinds: list[str] | None, tools: bool) -> tuple[str, ...] | None:
    """The clip mix of ``--kinds`` / ``--tools``: None for the default (``envs.synthetic.KINDS``), else a tuple."""
    if kinds is None and not tools:
        return None
    from envs.synthetic import KINDS, TOOL_KINDS, check_kinds

    chosen = list(kinds if kinds is not None else KINDS) + [k for k in TOOL_KINDS if tools and k not in (kinds or ())]
    try:
        chosen = list(dict.fromkeys(check_kinds(chosen)))  # in order, once each
    except ValueError as err:
        raise UserError(f"--kinds: {err}") from None
    return None if tuple(chosen) == KINDS else tuple(chosen)


def run(args) -> int:
    check_common(args, "--clips", args.clips)
    if args.frames < 2:
        raise UserError(f"--frames must be at least 2, got {args.frames}")
    check_seed_range(args.seed, args.clips)
    kinds = synth_kinds(args.kinds, args.tools)
    spec = SynthSpec(frames=args.frames, image_size=args.image_size, seed=args.seed, kinds=kinds)
    ClipRunner(spec)  # fail here, before touching the file, if the generator is missing
    env_kwargs = {"frames": args.frames, **({"kinds": list(kinds)} if kinds is not None else {})}
    writer = DatasetWriter(args.out, env_id=SYNTH_ENV_ID, env_kwargs=env_kwargs, kind="synthetic",
                           image_size=args.image_size, config={"seed": args.seed}, overwrite=args.overwrite,
                           commit_every=args.commit_every)
    with writer, StopSignals() as stop:
        before, start = writer.total, writer.next_attempt
        if before >= args.clips:
            print(f"{args.out} already holds {before} clips (asked for {args.clips}); nothing to do")
            return 0
        t0 = time.perf_counter()
        bar = tqdm(total=args.clips, initial=before, unit="clip", desc="synth", dynamic_ncols=True)
        with bar, OrderedPool(ClipRunner, spec, args.workers, start, start + args.clips - before,
                                    lambda: stop.requested) as pool:
            for index, clip in pool:
                writer.append(clip, index)
                bar.update(1)
        if stop.requested:
            print(f"stopped: {args.out} holds {writer.total} clips; rerun the same command to continue")
            raise KeyboardInterrupt
        elapsed = time.perf_counter() - t0
        made = writer.total - before
        print(f"{args.out}: {writer.total} clips ({made} new) in {elapsed:.1f} s: {made / elapsed:.2f} clips/s")
    return 0
