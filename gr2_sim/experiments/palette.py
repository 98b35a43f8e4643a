"""palette: how far each named color stands out from the table, in the frames the model sees.

For ``--scenes`` resets of ``--env`` (seeds from ``--seed``, test seeds by default), the object geom ``--geom``
is painted each palette color (``envs.scene.COLORS``) in turn and the camera image rendered at ``--size`` pixels
(the policy's input size). The object's pixels are those that change when it is made invisible; per color:
``pixels`` (its mean area), ``rgb_distance`` (mean Euclidean distance, in 0-255 units, between its pixels and the
table pixels behind them, i.e. the invisible-object frame) and ``hue_gap`` (degrees between the object's mean
color and the mean color of a 1-pixel ring of table around it). A color that the policy misses more often than
the others (``gr2-sim eval`` prints success per instruction word) but that is not the least distinct here is not
failing because it is hard to see in RGB.

Outputs: ``DIR/summary.json``. Seconds on one core.
"""

from __future__ import annotations

import argparse
import colorsys
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--env", default="GR2Sim/Reach-v0", help="a gr2-sim env id")
    p.add_argument("--geom", default="cube0", help="the geom to paint (Reach, Push, PickPlace: cube0)")
    p.add_argument("--scenes", type=int, default=20, help="env resets to average over")
    p.add_argument("--seed", type=int, default=1_000_000, help="scene i is env.reset(seed=SEED + i)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels (the policy's input)")


def _hue(rgb: np.ndarray) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(rgb / 255.0))[0]


def contrast(env, geom: str, colors: dict[str, tuple[float, ...]]) -> dict[str, dict[str, float]]:
    """Per color: pixels, rgb_distance and hue_gap of ``geom`` in the env's current scene (see module doc)."""
    u = env.unwrapped
    gid = u.model.geom(geom).id
    saved = u.model.geom_rgba[gid].copy()
    try:
        u.model.geom_rgba[gid, 3] = 0.0
        behind = env.render().astype(np.float64)
        out = {}
        for name, rgba in colors.items():
            u.model.geom_rgba[gid] = rgba
            img = env.render().astype(np.float64)
            mask = np.abs(img - behind).sum(-1) > 20
            if mask.sum() < 2:
                continue  # out of view in this scene
            ring = np.zeros_like(mask)
            ys, xs = np.nonzero(mask)
            ring[max(ys.min() - 1, 0):ys.max() + 2, max(xs.min() - 1, 0):xs.max() + 2] = True
            ring &= ~mask
            gap = abs(_hue(img[mask].mean(0)) - _hue(behind[ring].mean(0)))
            out[name] = {"pixels": float(mask.sum()),
                         "rgb_distance": float(np.linalg.norm(img[mask] - behind[mask], axis=-1).mean()),
                         "hue_gap": float(min(gap, 360.0 - gap))}
    finally:
        u.model.geom_rgba[gid] = saved
    return out


def run(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import envs
    from envs import scene

    common.check_positive(args, "scenes", "size")
    started = time.perf_counter()
    try:
        env = gym.make(args.env, render_mode="rgb_array", render_size=args.size)
    except Exception as err:  # unknown id, or an env without render_size: not a gr2-sim env
        raise UserError(f"--env {args.env!r}: {err}; palette needs a gr2-sim env ({', '.join(envs.ENV_IDS)})") from None
    try:
        env.reset(seed=args.seed)
        if args.geom not in {env.unwrapped.model.geom(i).name for i in range(env.unwrapped.model.ngeom)}:
            raise UserError(f"--geom {args.geom!r} is not a geom of {args.env}; Reach, Push and PickPlace have cube0")
        per_scene: dict[str, list[dict[str, float]]] = {name: [] for name in scene.COLORS}
        for i in range(args.scenes):
            env.reset(seed=args.seed + i)
            for name, values in contrast(env, args.geom, scene.COLORS).items():
                per_scene[name].append(values)
    finally:
        env.close()
    colors = {name: {key: float(np.mean([v[key] for v in values])) for key in ("pixels", "rgb_distance", "hue_gap")}
              | {"scenes": len(values)} for name, values in per_scene.items() if values}
    print(f"{'color':8s} {'pixels':>7s} {'RGB distance (0-255)':>21s} {'hue gap (deg)':>14s}")
    for name, v in sorted(colors.items(), key=lambda kv: kv[1]["rgb_distance"]):
        print(f"{name:8s} {v['pixels']:7.1f} {v['rgb_distance']:21.1f} {v['hue_gap']:14.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    common.write_summary(Path(args.out), args, started, {"colors": colors})
    return 0
