"""physics-probes: did video pre-training teach object permanence, gravity and contact?

Held-out synthetic probe clips (``envs.synthetic.make_probe``, seeds from ``--probe-seed``, far from the
pre-training clips' seeds 0 .. clips-1), ``--probes`` per kind: ``occlusion`` (a ball rolling behind a wall),
``unsupported`` (an object released in mid air), ``wall_bounce`` (a ball rolling into a wall). Each clip comes with
masks of where its object truly is, even when hidden. Every model predicts T future frames from one
conditioning frame by DDIM (``--ddim-steps``) with the null instruction, as phase 1 was trained (the video stage
feeds no text: ``objectives.VideoObjective`` uses ``use_text=False``), at windows starting every T frames. The
error is the MSE inside the mask (pixels in [0, 1], RGB averaged) of each predicted frame whose mask is non-empty,
averaged per clip (``mask_mse``; ``frame_mse`` is the whole frame). For ``occlusion`` also: ``hidden_mask_mse``,
frames where the ball is behind the wall (the real pixels there show the wall: drawing the ball through it errs),
and ``reappear_mask_mse``, frames where the ball is visible again after being hidden earlier in the window (the
model must keep the ball in mind; windows without a reappearance do not count, so n may be small). Per kind: the
mean over clips with a 95% bootstrap interval (n = clips with such frames), and the paired differences
phase1 - robot_only and phase1 - untrained of ``mask_mse`` (bootstrap over clips).

Models: ``phase1`` (``--video-run``, or trained on ``--clips`` synthetic clips), ``untrained`` (the same config,
fresh weights: adaLN-Zero makes its prediction exactly 0, mid-grey), ``robot_only`` (``--robot-run``, or phase 2
without phase 1: ``--stage robot-video`` from scratch on the demos' frames, without state), and ``copy`` (no model:
the conditioning frame repeated, "nothing moves"). A model conditioned on robot state gets the normalised mean
state (zeros).

Outputs: ``DIR/summary.json``, ``DIR/probe_errors.png`` (per kind and model, with intervals),
``DIR/probe_strips.png`` (per kind: real frames with the mask outlined, then each model's prediction),
``DIR/probes/*.npz`` (rendered probes), ``DIR/predictions/<model>.npz`` (cached predictions).

CPU budget at the defaults (``small``, phase 1 2000 steps on 1000 clips, robot-only 2000 steps on 200 Reach
demos, 10 probes per kind): about 35 minutes on 2 cores, almost all of it the two trainings and the data
(estimated from the README's throughput; not timed end to end). With both runs given: ~2 minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common

KINDS = ("occlusion", "unsupported", "wall_bounce")
MODELS = ("phase1", "robot_only", "untrained", "copy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_common_options(p)
    common.add_data_options(p, env="GR2Sim/Reach-v0", demos=200, synth=True)
    p.add_argument("--video-run", default=None, help="phase-1 run folder (default: train one on synthetic clips)")
    p.add_argument("--robot-run", default=None,
                   help="robot-only video model: a phase-3-from-scratch or phase-2-without-phase-1 run "
                        "(default: train --stage robot-video from scratch on the demos)")
    p.add_argument("--pretrain-steps", type=int, default=2000, help="phase-1 steps when it trains one")
    p.add_argument("--robot-steps", type=int, default=2000, help="robot-only steps when it trains one")
    p.add_argument("--probes", type=int, default=10, help="probe clips per kind")
    p.add_argument("--frames", type=int, default=16, help="frames per probe clip")
    p.add_argument("--probe-seed", type=int, default=common.PROBE_SEED_START, help="probe i uses seed PROBE_SEED + i")
    p.add_argument("--ddim-steps", type=int, default=10)


def ensure_runs(args, out: Path) -> dict[str, Path]:
    video = Path(args.video_run) if args.video_run else None
    if video is None:
        video = common.train_run(out / "runs" / "phase1", stage="video", data=str(common.synth_data(args, out)),
                                 preset=args.preset, steps=args.pretrain_steps, batch_size=args.batch_size,
                                 seed=args.seed, device=args.device)
    robot = Path(args.robot_run) if args.robot_run else None
    if robot is None:
        robot = common.train_run(out / "runs" / "robot_only", stage="robot-video", data=str(common.demo_data(args, out)),
                                 demos=args.demos, preset=args.preset, steps=args.robot_steps,
                                 batch_size=args.batch_size, seed=args.seed, device=args.device, use_state=False)
    return {"phase1": video, "robot_only": robot}


def probe_clips(args, out: Path, image_size: int) -> dict[str, list[dict]]:
    """{kind: [{"seed", "frames" (T, S, S, 3) uint8, "masks" (T, S, S) bool, "visible" (T,) bool}]}, cached."""
    from envs.synthetic import make_probe

    clips: dict[str, list[dict]] = {}
    for kind in KINDS:
        clips[kind] = []
        for i in range(args.probes):
            seed = args.probe_seed + i
            path = out / "probes" / f"{kind}_{seed}_{args.frames}f_{image_size}px.npz"
            if not path.exists():
                probe = make_probe(kind, seed, frames=args.frames, image_size=image_size)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, frames=probe.frames, masks=probe.masks,
                                    visible=np.asarray(probe.meta.get("visible", [True] * args.frames), bool))
                tmp.replace(path)
            with np.load(path) as z:
                clips[kind].append({"seed": seed, "frames": z["frames"], "masks": z["masks"], "visible": z["visible"]})
    return clips


def windows_of(frames: int, horizon: int, stride: int) -> list[int]:
    """Conditioning-frame indices: every ``horizon`` frames, while the last predicted frame is in the clip."""
    last = frames - 1 - horizon * stride
    if last < 0:
        raise UserError(f"--frames {frames} is too short for {horizon} future frames at stride {stride}")
    return list(range(0, last + 1, horizon))


def load_video_model(run: Path | None, like: Path, seed: int):
    """(model, frame stride): a run's EMA weights, or (run None) fresh weights with ``like``'s config."""
    import torch

    from gr2_sim import checkpoint as ckpt
    from gr2_sim.model import VideoActionDiT

    config = ckpt.load_config(run if run is not None else like)
    torch.manual_seed(seed)
    what = "the physics probes"
    model = ckpt.load_dit(run, what=what) if run is not None else VideoActionDiT(ckpt.load_model_config(like, what)).eval()
    return model, int(config.get("train", {}).get("frame_stride", 1))


def predict(model, stride: int, clips: dict, ddim_steps: int, seed: int) -> dict[str, np.ndarray]:
    """{kind: (clips, windows, T, S, S, 3) float32 in [0, 1]}: DDIM predictions with the null instruction."""
    import torch

    from gr2_sim.dataset import frames_to_tensor
    from gr2_sim.diffusion import Diffusion

    cfg, diffusion = model.config, Diffusion(model.config)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for kind, items in clips.items():
        starts = windows_of(len(items[0]["frames"]), cfg.n_future, stride)
        cond = frames_to_tensor(np.stack([c["frames"][s] for c in items for s in starts]))  # (W, 3, S, S)
        tokens = model.text_encoder.tokenize([""] * len(cond))
        state = torch.zeros(len(cond), cfg.state_dim) if cfg.state_dim else None
        with torch.no_grad():
            frames, _ = diffusion.ddim_sample(model, cond, tokens, state, ddim_steps, generator=gen,
                                              return_actions=False)
        pred = ((frames + 1) / 2).permute(0, 1, 3, 4, 2).numpy()  # (W, T, S, S, 3) in [0, 1]
        out[kind] = pred.reshape(len(items), len(starts), *pred.shape[1:])
    return out


def copy_predictions(clips: dict, horizon: int, stride: int) -> dict[str, np.ndarray]:
    out = {}
    for kind, items in clips.items():
        starts = windows_of(len(items[0]["frames"]), horizon, stride)
        cond = np.stack([[c["frames"][s] for s in starts] for c in items]).astype(np.float32) / 255
        out[kind] = np.repeat(cond[:, :, None], horizon, axis=2)
    return out


def errors(pred: np.ndarray, items: list[dict], stride: int) -> dict[str, np.ndarray]:
    """Per clip: mask MSE over predicted frames with a non-empty mask, the same over hidden frames (NaN when
    none), and full-frame MSE."""
    n_clips, n_win, T = pred.shape[:3]
    names = ("mask_mse", "hidden_mask_mse", "reappear_mask_mse", "frame_mse")
    result = {name: np.full(n_clips, np.nan) for name in names}
    for i, clip in enumerate(items):
        starts = windows_of(len(clip["frames"]), T, stride)
        values: dict[str, list[float]] = {name: [] for name in names}
        for w, s in enumerate(starts):
            for k in range(T):
                f = s + (k + 1) * stride
                sq = ((pred[i, w, k] - clip["frames"][f].astype(np.float32) / 255) ** 2).mean(-1)  # (S, S)
                values["frame_mse"].append(sq.mean())
                if not clip["masks"][f].any():
                    continue
                values["mask_mse"].append(sq[clip["masks"][f]].mean())
                if not clip["visible"][f]:
                    values["hidden_mask_mse"].append(values["mask_mse"][-1])
                elif not all(clip["visible"][s + j * stride] for j in range(k + 1)):
                    values["reappear_mask_mse"].append(values["mask_mse"][-1])
        for name in names:
            result[name][i] = np.mean(values[name]) if values[name] else np.nan
    return result


def cached_predictions(path: Path, key: dict, make) -> dict[str, np.ndarray]:
    if path.exists():
        with np.load(path) as z:
            if json.loads(str(z["key"])) == key:
                return {k: z[k] for k in KINDS}
    pred = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, key=json.dumps(key), **{k: v.astype(np.float32) for k, v in pred.items()})
    tmp.replace(path)
    return pred


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    ok = np.isfinite(a) & np.isfinite(b)
    return common.bootstrap_mean_ci(a[ok] - b[ok], seed=seed)


def run(args: argparse.Namespace) -> int:
    from gr2_sim.plots import plot_probe_errors, plot_probe_strips

    common.check_positive(args, "pretrain_steps", "robot_steps", "probes", "frames", "ddim_steps", "demos",
                          "batch_size")
    started = time.perf_counter()
    out = Path(args.out)
    runs = ensure_runs(args, out)
    phase1, stride = load_video_model(runs["phase1"], runs["phase1"], args.seed)
    clips = probe_clips(args, out, phase1.config.img_size)
    predictions, strides, horizons = {}, {}, {}
    for label in ("phase1", "robot_only", "untrained"):
        model, stride_m = (phase1, stride) if label == "phase1" else load_video_model(
            runs.get(label), runs["phase1"], args.seed)
        if model.config.img_size != phase1.config.img_size:
            raise UserError(f"{runs[label]} predicts {model.config.img_size}px frames, phase 1 "
                            f"{phase1.config.img_size}px; give runs of one image size")
        key = {"run": str(runs.get(label, "untrained")), "probes": args.probes, "frames": args.frames,
               "probe_seed": args.probe_seed, "ddim_steps": args.ddim_steps, "seed": args.seed}
        predictions[label] = cached_predictions(out / "predictions" / f"{label}.npz", key,
                                                lambda m=model, s=stride_m: predict(m, s, clips, args.ddim_steps,
                                                                                    args.seed))
        strides[label], horizons[label] = stride_m, model.config.n_future
    predictions["copy"] = copy_predictions(clips, phase1.config.n_future, stride)
    strides["copy"], horizons["copy"] = stride, phase1.config.n_future
    per_kind: dict[str, dict] = {}
    for kind in KINDS:
        errs = {m: errors(predictions[m][kind].astype(np.float32), clips[kind], strides[m]) for m in MODELS}
        per_kind[kind] = {m: {name: common.bootstrap_mean_ci(v, seed=args.seed) for name, v in errs[m].items()
                              if kind == "occlusion" or name in ("mask_mse", "frame_mse")} for m in MODELS}
        per_kind[kind]["phase1_minus_robot_only_mask_mse"] = paired_difference(
            errs["phase1"]["mask_mse"], errs["robot_only"]["mask_mse"], args.seed)
        per_kind[kind]["phase1_minus_untrained_mask_mse"] = paired_difference(
            errs["phase1"]["mask_mse"], errs["untrained"]["mask_mse"], args.seed)
    figures = [plot_probe_errors(per_kind, MODELS, out / "probe_errors.png").name,
               plot_probe_strips(clips, predictions, strides, out / "probe_strips.png").name]
    common.write_summary(out, args, started, {
        "runs": {k: str(v) for k, v in runs.items()}, "probe_seeds": [args.probe_seed, args.probe_seed + args.probes - 1],
        "horizon": horizons, "frame_stride": strides, "per_kind": per_kind, "figures": figures,
        "units": "MSE of pixels in [0, 1] (RGB averaged) inside the object's true mask; per-clip means, "
                 "mean over clips with a 95% bootstrap interval",
    })
    return 0
