"""capabilities: the lesson's five capabilities, each probed where copying the last frame is clearly wrong.

One held-out probe kind per capability (``envs.synthetic.make_probe``, seeds from ``--probe-seed``), and gravity
once more in the robot's own scene:

    occlusion   ``reappear``  a block slides from rest down a ramp, behind a wall, and comes out on the table;
                              scored only on frames where it is visible again after being hidden
    contact     ``contact``   a ball rolls from rest down a ramp into a light object: does the struck one move,
                              and where to
    gravity     ``support``   a block overhanging a platform's edge topples off and falls; another object
                              resting on the platform stays
    deformable  ``rope``      a straight rope released above a block falls and drapes over it
    tool        ``tool``      a hook, its end behind an object, pulls it back towards its handle
    gravity_robot ``stack_topple``  in a Stack scene (the robot's camera and cubes, the gripper parked), the top
                              cube set down off-centre on the bottom one topples off (``envs.robot_probes``)

Every probe starts at rest (but for the tool's hand), so its first frame determines what follows, and its event
moves its target far in the image within 0.8 s (the target's true pixels come with the clip, even when hidden).
Each model predicts its ``n_future`` frames at its own frame stride from frame 0, by DDIM (``--ddim-steps``) with
the null instruction (the sampling of ``physics-probes``). ``copy`` repeats frame 0 ("nothing moves");
``oracle`` is handed the true future (the reference that shows each probe can say yes); both use ``--horizon``
frames at ``--stride``. Scores per predicted frame f (pixels in [0, 1], RGB averaged), averaged per clip:

    region_mse      MSE in the region that matters: where the target was at frame 0 or is at f (the union);
                    for occlusion, where the block truly is on frames where it has reappeared
    new_place_mse   MSE where the target is at f but was not at 0: did the model put it where it went?
    old_place_mse   MSE where it was at 0 but no longer is: did the model take it away from there?
    supported_mse   gravity only: MSE where the object resting on the platform is (at 0 or f); it stays, so copy
                    is right there and a model that drops everything errs
    new_place_closer  the share of the new place's pixels that the prediction draws nearer the true frame than
                    frame 0 (squared RGB distance): copy scores 0, the oracle 1. The MSEs reward hedging (a grey
                    or blurred frame is half wrong everywhere, copy wholly wrong in both places, so an untrained
                    grey model "beats" copy on region_mse); this share does not: grey or blur stays nearer the
                    background than the object in most pixels

Per capability and model: mean over clips with a 95% bootstrap interval; the paired difference of region_mse to
``copy`` with its interval and ``beats_copy`` ("yes" when that interval lies below 0); and ``predicts_event``:
"yes" when the interval of new_place_closer lies above 0.5 (most of where the target went is drawn as the truth,
not as the unchanged frame), else "no". Read a capability as shown only where both say yes.

Models: ``--ckpt [LABEL=]RUN`` (repeatable: the phase-1 model, a robot-video-only model, one trained on the
probe distribution ...), ``--untrained`` (the first run's config with fresh weights). Without any, copy and oracle
only. Outputs: ``DIR/summary.json``, ``DIR/<capability>.png`` (real frames with the target outlined, then copy and
each model), ``DIR/probes/*.npz`` (rendered once), ``DIR/predictions/<label>.npz`` (cached per run and settings).
Rerunning the command skips what is cached. CPU budget: ~0.2 s per probe clip to render; a model's prediction
costs ``--ddim-steps`` forward passes per clip.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common
from gr2_sim.io import atomic_write_bytes

# capability -> envs.synthetic probe kind
CAPABILITIES = {"occlusion": "reappear", "contact": "contact", "gravity": "support", "deformable": "rope",
                "tool": "tool", "gravity_robot": "stack_topple"}
PROBE_SEED_START = 800_000  # held out: far from pre-training clips (0 .. clips-1) and physics-probes' 700,000+
REFERENCES = ("copy", "oracle")
SCORES = ("region_mse", "new_place_mse", "old_place_mse", "new_place_closer", "supported_mse")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="experiment folder (rerunning the command resumes it)")
    p.add_argument("--ckpt", action="append", default=[], metavar="[LABEL=]RUN",
                   help="a video model's run folder, labelled LABEL (default: the folder's name); repeatable")
    p.add_argument("--untrained", action="store_true", help="also score the first run's config with fresh weights")
    p.add_argument("--probes", type=int, default=20, help="probe clips per capability")
    p.add_argument("--probe-seed", type=int, default=PROBE_SEED_START, help="probe i uses seed PROBE_SEED + i")
    p.add_argument("--horizon", type=int, default=4, help="future frames copy and oracle predict")
    p.add_argument("--stride", type=int, default=2, help="frames between copy's and oracle's future frames (10 Hz)")
    p.add_argument("--image-size", type=int, default=64, help="probe frame size without a run (else the run's)")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and untrained weights)")


def parse_ckpts(values: list[str]) -> dict[str, Path]:
    """``[LABEL=]RUN`` values -> {label: run folder}; labels unique and not a reference's name."""
    runs: dict[str, Path] = {}
    for value in values:
        label, _, path = value.rpartition("=")
        run = Path(path)
        label = label or run.name
        if not run.is_dir():
            raise UserError(f"--ckpt {value}: no such run folder {run}")
        if label in runs or label in (*REFERENCES, "untrained"):
            raise UserError(f"--ckpt {value}: the label {label!r} is taken; give another as LABEL=RUN")
        runs[label] = run
    return runs


# ------------------------------------------------------------------------------------------ probes
def probe_clips(out: Path, probes: int, seed0: int, frames: int, image_size: int) -> dict[str, list[dict]]:
    """{capability: [{"seed", "frames" (T, S, S, 3) uint8, "masks" (T, S, S) bool, "visible" (T,) bool, and per
    other scored object its (T, S, S) masks by role, e.g. "supported"}]}; each clip rendered once into DIR/probes."""
    from envs.robot_probes import stack_topple
    from envs.synthetic import make_probe

    clips: dict[str, list[dict]] = {}
    for capability, kind in CAPABILITIES.items():
        clips[capability] = []
        for seed in range(seed0, seed0 + probes):
            path = out / "probes" / f"{kind}_{seed}_{frames}f_{image_size}px.npz"
            if not path.exists():
                probe = (stack_topple(seed, frames=frames, image_size=image_size) if kind == "stack_topple"
                         else make_probe(kind, seed, frames=frames, image_size=image_size))
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, frames=probe.frames, masks=probe.masks,
                                    visible=np.asarray(probe.meta["visible"], bool),
                                    **{f"other_{role}": m for role, m in probe.other_masks.items()})
                tmp.replace(path)
            with np.load(path) as z:
                clips[capability].append({"seed": seed, "frames": z["frames"], "masks": z["masks"],
                                          "visible": z["visible"],
                                          **{k[len("other_"):]: z[k] for k in z.files if k.startswith("other_")}})
    return clips


def copy_prediction(clips: dict, horizon: int) -> dict[str, np.ndarray]:
    """{capability: (clips, horizon, S, S, 3) float32}: frame 0 repeated."""
    return {c: np.repeat(np.stack([x["frames"][0] for x in items])[:, None].astype(np.float32) / 255, horizon, axis=1)
            for c, items in clips.items()}


def oracle_prediction(clips: dict, horizon: int, stride: int) -> dict[str, np.ndarray]:
    """{capability: (clips, horizon, S, S, 3) float32}: the true future frames."""
    return {c: np.stack([x["frames"][stride:horizon * stride + 1:stride] for x in items]).astype(np.float32) / 255
            for c, items in clips.items()}


def model_prediction(model, stride: int, clips: dict, ddim_steps: int, seed: int) -> dict[str, np.ndarray]:
    """{capability: (clips, n_future, S, S, 3) float32}: the model's frames from frame 0 (physics-probes' sampler)."""
    from gr2_sim.experiments.physics_probes import predict

    horizon = model.config.n_future
    short = {c: [dict(x, frames=x["frames"][:horizon * stride + 1]) for x in items] for c, items in clips.items()}
    return {c: v[:, 0].astype(np.float32) for c, v in predict(model, stride, short, ddim_steps, seed).items()}


def cached(path: Path, key: dict, make) -> dict[str, np.ndarray]:
    if path.exists():
        with np.load(path) as z:
            if json.loads(str(z["key"])) == key:
                return {c: z[c] for c in CAPABILITIES}
    pred = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, key=json.dumps(key), **{c: v.astype(np.float16) for c, v in pred.items()})
    tmp.replace(path)
    return {c: v.astype(np.float16) for c, v in pred.items()}


# ------------------------------------------------------------------------------------------ scores
def scores(capability: str, pred: np.ndarray, items: list[dict], stride: int) -> dict[str, np.ndarray]:
    """Per clip, the mean over its scored predicted frames of each of SCORES (NaN where a clip has none)."""
    result = {name: np.full(len(items), np.nan) for name in SCORES}
    for i, clip in enumerate(items):
        values: dict[str, list[float]] = {name: [] for name in SCORES}
        start = clip["masks"][0]
        for k in range(pred.shape[1]):
            f = (k + 1) * stride
            if f >= len(clip["frames"]):
                break
            now = clip["masks"][f]
            sq = ((pred[i, k].astype(np.float32) - clip["frames"][f].astype(np.float32) / 255) ** 2).mean(-1)
            if capability == "occlusion":  # only where the block has come out from behind the wall
                if not (clip["visible"][f] and not clip["visible"][: f + 1].all()):
                    continue
                regions = {"region_mse": now, "new_place_mse": now & ~start, "old_place_mse": start & ~now}
            else:
                regions = {"region_mse": start | now, "new_place_mse": now & ~start, "old_place_mse": start & ~now}
            if "supported" in clip:
                regions["supported_mse"] = clip["supported"][0] | clip["supported"][f]
            for name, region in regions.items():
                if region.any():
                    values[name].append(float(sq[region].mean()))
            new = regions["new_place_mse"]
            if new.any():
                unchanged = ((pred[i, k].astype(np.float32) - clip["frames"][0].astype(np.float32) / 255) ** 2).mean(-1)
                values["new_place_closer"].append(float((sq[new] < unchanged[new]).mean()))
        for name in SCORES:
            result[name][i] = np.mean(values[name]) if values[name] else np.nan
    return result


# a model must beat copy by more than rounding: an untrained residual model predicts copy to within 1e-7
MIN_GAIN = 1e-4


def paired(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    """Paired differences a - b (per clip) with a bootstrap interval; beats_copy when the whole interval lies
    below -MIN_GAIN."""
    ok = np.isfinite(a) & np.isfinite(b)
    out = common.bootstrap_mean_ci(a[ok] - b[ok], seed=seed)
    hi = out["ci95"][1]
    out["beats_copy"] = "yes" if hi is not None and hi < -MIN_GAIN else "no"
    return out


# ------------------------------------------------------------------------------------------ figures
def plot_capability(capability: str, clip: dict, rows: dict[str, tuple[np.ndarray, int]], path: Path) -> Path:
    """Real frames (target outlined in red) at each row's own stride, then each row's predicted frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + max(len(p) for p, _ in rows.values())
    stride0 = next(iter(rows.values()))[1]
    fig, axes = plt.subplots(1 + len(rows), cols, figsize=(1.25 * cols, 1.3 * (1 + len(rows))), squeeze=False)
    for k in range(cols):
        f = k * stride0
        if f < len(clip["frames"]):
            axes[0][k].imshow(clip["frames"][f])
            if clip["masks"][f].any():
                axes[0][k].contour(clip["masks"][f], levels=[0.5], colors="r", linewidths=0.6)
            axes[0][k].set_title("frame 0" if k == 0 else f"+{f} ({f / 10:.1f} s)", fontsize=7)
    axes[0][0].set_ylabel(f"{capability}\nreal", fontsize=7)
    for r, (label, (pred, stride)) in enumerate(rows.items(), start=1):
        axes[r][0].imshow(clip["frames"][0])
        for k in range(len(pred)):
            axes[r][k + 1].imshow(np.clip(pred[k].astype(np.float32), 0, 1))
            if stride != stride0:  # its frames are other times than the real row's above
                axes[r][k + 1].set_title(f"+{(k + 1) * stride}", fontsize=6)
        axes[r][0].set_ylabel(f"{label}\n(stride {stride})", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> int:
    common.check_positive(args, "probes", "horizon", "stride", "ddim_steps", "image_size")
    started = time.perf_counter()
    out = Path(args.out)
    runs = parse_ckpts(args.ckpt)
    if args.untrained and not runs:
        raise UserError("--untrained needs a --ckpt run whose config the fresh model copies")
    models: dict[str, tuple] = {}
    if runs:
        from gr2_sim.experiments.physics_probes import load_video_model

        for label, run_dir in runs.items():
            models[label] = (*load_video_model(run_dir, run_dir, args.seed), str(run_dir))
        if args.untrained:
            first = next(iter(runs.values()))
            models["untrained"] = (*load_video_model(None, first, args.seed), f"untrained like {first}")
    sizes = {m.config.img_size for m, _, _ in models.values()}
    if len(sizes) > 1:
        raise UserError(f"the runs predict frames of different sizes {sorted(sizes)}; give runs of one image size")
    size = sizes.pop() if sizes else args.image_size
    frames = 1 + max([args.horizon * args.stride] + [m.config.n_future * s for m, s, _ in models.values()])
    clips = probe_clips(out, args.probes, args.probe_seed, frames, size)

    predictions: dict[str, tuple[dict, int]] = {
        "copy": (copy_prediction(clips, args.horizon), args.stride),
        "oracle": (oracle_prediction(clips, args.horizon, args.stride), args.stride)}
    for label, (model, stride, source) in models.items():
        key = {"run": source, "probes": args.probes, "probe_seed": args.probe_seed, "frames": frames,
               "ddim_steps": args.ddim_steps, "seed": args.seed, "stride": stride, "size": size}
        ckpt_files = sorted(Path(source).glob("*.safetensors")) if label != "untrained" else []
        key["weights_mtime_ns"] = [f.stat().st_mtime_ns for f in ckpt_files]
        predictions[label] = (cached(out / "predictions" / f"{label}.npz", key,
                                     lambda m=model, s=stride: model_prediction(m, s, clips, args.ddim_steps,
                                                                                 args.seed)), stride)

    per_capability: dict[str, dict] = {}
    figures = []
    for capability in CAPABILITIES:
        errs = {label: scores(capability, pred[capability], clips[capability], stride)
                for label, (pred, stride) in predictions.items()}
        result = {label: {name: common.bootstrap_mean_ci(v, seed=args.seed) for name, v in e.items()
                          if name != "supported_mse" or capability == "gravity"} for label, e in errs.items()}
        for label, (pred, stride) in predictions.items():
            if result[label]["region_mse"]["n"] == 0:
                result[label]["note"] = (f"no scored frames: its window ({pred[capability].shape[1]} frames at stride "
                                         f"{stride}) ends before the event")
            if label != "copy":  # copy scored on this row's own window (its frames and stride), paired clip by clip
                horizon = pred[capability].shape[1]
                same = {capability: clips[capability]}
                copy_errs = scores(capability, copy_prediction(same, horizon)[capability], clips[capability],
                                   stride)["region_mse"]
                result[label]["copy_region_mse_same_window"] = common.bootstrap_mean_ci(copy_errs, seed=args.seed)
                result[label]["minus_copy_region_mse"] = paired(errs[label]["region_mse"], copy_errs, args.seed)
            closer = result[label]["new_place_closer"]["ci95"][0]
            result[label]["predicts_event"] = "yes" if closer is not None and closer > 0.5 else "no"
        per_capability[capability] = {"probe": CAPABILITIES[capability], **result}
        rows = {label: (pred[capability][0], stride) for label, (pred, stride) in predictions.items()
                if label != "oracle"}
        figures.append(plot_capability(capability, clips[capability][0], rows, out / f"{capability}.png").name)
    common.write_summary(out, args, started, {
        "runs": {label: source for label, (_, _, source) in models.items()},
        "probe_seeds": [args.probe_seed, args.probe_seed + args.probes - 1], "probe_frames": frames,
        "image_size": size,
        "horizon": {label: int(pred["occlusion"].shape[1]) for label, (pred, _) in predictions.items()},
        "frame_stride": {label: stride for label, (_, stride) in predictions.items()},
        "per_capability": per_capability, "figures": figures,
        "units": "MSE of pixels in [0, 1] (RGB averaged) in each score's region; per-clip means, mean over clips "
                 "with a 95% bootstrap interval; minus_copy: paired differences against copy on the same frames "
                 "(each row's own window; negative: better than copy)",
    })
    return 0
