"""Synthetic physics video without a robot: phase-1 pre-training clips and physics probes (GR-2).

Procedural MuJoCo scenes on the robot envs' table, seen by the same ``front`` camera at the same frame rate
(``CONTROL_HZ``; physics at ``TIMESTEP``), to learn gravity, contact and object permanence before the
model sees a robot. Clips carry no actions::

    clip = make_clip(seed=7)                   # kind drawn from KINDS; clip.frames: (T, H, W, 3) uint8
    clip.meta["positions"]                     # (T, n_objects, 3) nested lists: object centres (m)
    probe = make_probe("occlusion", seed=7)    # + probe.masks: (T, H, W) bool; meta["visible"]: T bools

Clip kinds (``KINDS``): ``bounce`` balls dropped or thrown onto the table; ``fall`` blocks and balls released
above each other, landing and toppling; ``collide`` low-friction objects sent into each other; ``roll`` balls
rolling across the table, some down a ramp; ``occlude`` objects passing behind an opaque wall. Probe kinds
(``PROBE_KINDS``): ``occlusion`` a ball rolling at constant speed behind a wall, ``unsupported`` an object
released in mid air, ``wall_bounce`` a ball rolling into a wall and back. A probe's ``masks`` are where its
object truly is, from a segmentation render with the occluders hidden. Low rims (with invisible walls above
them) keep objects on the table. World frame: x right in the image, y away from the camera, z up.

All randomness comes from ``np.random.default_rng(seed)``: a seed gives bit-identical frames. A scene whose
simulation goes unstable (NaN, or MuJoCo's bad-acceleration reset) is redrawn from the next sub-seed.

Rendering: a GL context costs ~200 ms to create, so each process keeps one per image size for every clip's
model (all share the scene's only asset, the table texture). It is created lazily, so forked workers can make
clips -- if the parent has not rendered before the fork: EGL/llvmpipe state does not survive ``fork`` (the
child would hang; we raise instead). If the parent renders too, start workers with 'forkserver' or 'spawn'.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mujoco
import numpy as np
from mujoco import gl_context

import envs.scene as scene  # (the package imports it first: it sets MUJOCO_GL before mujoco is imported)

KINDS = ("bounce", "fall", "collide", "roll", "occlude")  # the default mix (clips made before tools existed)
TOOL_KINDS = ("tool",)  # a stick or hook, moved by an invisible hand, pushing or pulling objects
# "capabilities": a clip drawn like one of the five capability probes (below), for training the reference model
# "trained on the probe distribution" (the probes themselves use held-out seeds, 800,000+)
ALL_KINDS = KINDS + TOOL_KINDS + ("capabilities",)
PROBE_KINDS = ("occlusion", "unsupported", "wall_bounce")
# Probes of the five capabilities (gr2_sim.experiments.capabilities): each starts at rest but for the tool's
# hand, so one frame determines the future, and its event moves its target far within ~0.8 s.
CAPABILITY_PROBES = ("reappear", "contact", "support", "rope", "tool")
# Seconds per MuJoCo step: finer than the robot tasks' (scene.PHYSICS_TIMESTEP), because the bouncy contacts
# below are tuned at 4 ms; these clips are rendered once, offline, so their physics cost matters little.
TIMESTEP = 0.004
SUBSTEPS = round(1.0 / (scene.CONTROL_HZ * TIMESTEP))  # physics steps per frame
MAX_ATTEMPTS = 16  # sub-seeds tried before giving up on an unstable scene
ANTIALIAS = False  # no MSAA, like the robot envs (envs.scene): ~1 ms less per frame on llvmpipe
OCCLUDER_GROUP = 2  # geom group of occluders: hidden in the pass that finds an object's true pixels
HIDDEN_GROUP = 3  # geom group of the invisible containment walls (MjvOption hides groups 3-5)
# Bouncy contacts use MuJoCo's direct solref (-stiffness 1/s^2, -damping 1/s): restitution ~0.6-0.95. The
# standard (timeconst, dampratio) form with dampratio << 1 is stiffer than a 4 ms step can resolve and
# gains energy, and so does a stiffness above ~5e4.
BOUNCY_STIFFNESS, BOUNCY_DAMPING = 3.0e4, (8.0, 40.0)
RGBA = {"occluder": "0.80 0.80 0.82 1", "ramp": "0.62 0.58 0.52 1", "rim": "0.36 0.28 0.22 1",
        "wall": "0.70 0.74 0.80 1"}


@dataclass
class SyntheticClip:
    """One clip: ``frames`` (T, H, W, 3) uint8; ``masks`` (T, H, W) bool for probes, else None."""

    frames: np.ndarray
    kind: str
    meta: dict  # JSON-able: seed, objects (shape, color, rgba, size, mass, initial velocity ...), positions
    masks: np.ndarray | None = None
    other_masks: dict[str, np.ndarray] = field(default_factory=dict)  # a probe's other scored objects, by role


@dataclass
class _Body:
    """A free object: ``size`` is its radius (ball) or half-extent (block) in m, ``mass`` in kg."""

    shape: str  # "ball" | "block"
    color: str  # the COLORS name its rgba was jittered from
    rgba: list[float]
    size: float
    mass: float
    pos: Sequence[float]
    vel: Sequence[float] = (0.0, 0.0, 0.0)  # m/s, world frame
    spin: Sequence[float] = (0.0, 0.0, 0.0)  # rad/s, body frame
    quat: Sequence[float] = (1.0, 0.0, 0.0, 0.0)
    friction: float = 0.8
    solref: Sequence[float] = (0.008, 1.0)  # scene default: critically damped, no bounce

    def xml(self, name: str) -> str:
        kind, size = ("sphere", [self.size]) if self.shape == "ball" else ("box", [self.size] * 3)
        # priority 1: the object's own friction and solref decide its contacts with the table and walls
        return (f'<body name="{name}" pos="{_fmt(self.pos)}" quat="{_fmt(self.quat)}"><freejoint/>'
                f'<geom name="{name}" type="{kind}" size="{_fmt(size)}" mass="{self.mass:.4f}" '
                f'rgba="{_fmt(self.rgba)}" friction="{self.friction:.3f} 0.005 0.0001" solref="{_fmt(self.solref)}" '
                f'priority="1"/></body>')

    def meta(self) -> dict:
        values = {k: getattr(self, k) for k in ("shape", "color", "rgba", "size", "mass", "friction", "solref",
                                                "pos", "vel", "spin")}
        return {k: v if isinstance(v, str) else np.round(np.asarray(v, float), 4).tolist() for k, v in values.items()}


@dataclass
class _Mover:
    """A kinematic (mocap) body of ``geoms`` that an invisible hand moves through ``waypoints``: (time s, x, y,
    z, yaw rad), linearly in between, held at the last. It pushes what it meets and nothing pushes it."""

    geoms: str
    waypoints: list[tuple[float, float, float, float, float]]

    def pose(self, time: float) -> tuple[np.ndarray, np.ndarray]:
        times = [w[0] for w in self.waypoints]
        values = np.array([w[1:] for w in self.waypoints], float)
        x, y, z, yaw = (np.interp(time, times, values[:, k]) for k in range(4))
        return np.array([x, y, z]), np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


@dataclass
class _Scene:
    bodies: list[_Body]
    statics: str = ""  # MJCF of static geoms: ramps, occluders, walls
    info: dict = field(default_factory=dict)  # kind-specific meta
    movers: list[_Mover] = field(default_factory=list)
    extra_bodies: str = ""  # MJCF of other free bodies (a rope), placed by ``setup``
    setup: Callable[[mujoco.MjModel, mujoco.MjData], None] | None = None  # poses them before the first frame
    target: str = "obj0"  # a probe's masks: the geoms whose names are this or start with it + "_"
    others: dict[str, str] = field(default_factory=dict)  # role -> geom name, for the clip's other_masks


def _fmt(values) -> str:
    return " ".join(f"{float(v):.5g}" for v in values)


# ----------------------------------------------------------------------------- scene sampling
def _body(rng: np.random.Generator, shape: str, xy, z: float | None = None, bouncy: bool = False,
          **kwargs) -> _Body:
    """A random-size, -mass and -color object at ``xy``, resting on the table unless ``z`` is given."""
    size = float(rng.uniform(0.02, 0.034) if shape == "ball" else rng.uniform(0.018, 0.03))
    color = str(rng.choice(list(scene.COLORS)))
    rgb = np.clip(np.array(scene.COLORS[color][:3]) + rng.uniform(-0.08, 0.08, 3), 0.0, 1.0)
    body = _Body(shape, color, [*rgb.round(4).tolist(), 1.0], size, float(rng.uniform(0.03, 0.3)),
                 [float(xy[0]), float(xy[1]), size + 0.001 if z is None else float(z)], **kwargs)
    if bouncy:
        body.solref = (-BOUNCY_STIFFNESS, -float(rng.uniform(*BOUNCY_DAMPING)))
    return body


def _spread(rng: np.random.Generator, n: int, min_dist: float, low=(-0.18, -0.1), high=(0.18, 0.14)) -> np.ndarray:
    """``n`` xy points in the box, ideally ``min_dist`` apart (the last draw is kept if that fails)."""
    for _ in range(200):
        pts = rng.uniform(low, high, (n, 2))
        if (np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(n)).min(initial=np.inf) >= min_dist:
            break
    return pts


def _roll(body: _Body, vel) -> None:
    """Send an object on the table off at ``vel`` (xy, m/s); a ball gets the spin of rolling without slipping."""
    body.vel = (float(vel[0]), float(vel[1]), 0.0)
    if body.shape == "ball":
        body.spin = (-float(vel[1]) / body.size, float(vel[0]) / body.size, 0.0)


def _random_quat(rng: np.random.Generator) -> list[float]:
    q = rng.normal(size=4)
    return (q / np.linalg.norm(q)).tolist()


def _box(kind: str, half, pos, euler=(0.0, 0.0, 0.0), group: int = 0) -> str:
    return (f'<geom type="box" size="{_fmt(half)}" pos="{_fmt(pos)}" euler="{_fmt(euler)}" rgba="{RGBA[kind]}" '
            f'group="{group}"/>')


def _sample_bounce(rng: np.random.Generator) -> _Scene:
    bodies, launch = [], []
    for xy in _spread(rng, int(rng.integers(1, 5)), 0.08):
        ball = _body(rng, "ball", xy, z=rng.uniform(0.06, 0.2), bouncy=True)
        launch.append("thrown" if rng.random() < 0.5 else "dropped")
        if launch[-1] == "thrown":
            ball.vel = (*rng.uniform(-0.4, 0.4, 2).tolist(), float(rng.uniform(0.0, 0.8)))
        bodies.append(ball)
    return _Scene(bodies, info={"launch": launch})


def _sample_fall(rng: np.random.Generator) -> _Scene:
    """A loose pile released in mid air: lower objects land first, upper ones land on them and topple off."""
    centre, z, bodies = rng.uniform([-0.1, -0.04], [0.1, 0.1]), rng.uniform(0.06, 0.12), []
    for _ in range(int(rng.integers(2, 5))):  # at least two, so one can land on another
        shape = "block" if rng.random() < 0.6 else "ball"
        bodies.append(_body(rng, shape, centre + rng.uniform(-0.035, 0.035, 2), z=z, quat=_random_quat(rng)))
        z += 2 * bodies[-1].size + rng.uniform(0.005, 0.03)
    return _Scene(bodies)


def _sample_collide(rng: np.random.Generator) -> _Scene:
    """2-4 low-friction objects aimed at one meeting point, arriving at about the same time."""
    n = int(rng.integers(2, 5))
    meet, arrive = rng.uniform([-0.08, -0.02], [0.08, 0.08]), rng.uniform(0.3, 0.6)
    bodies = []
    for a in rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n) / n + rng.uniform(-0.3, 0.3, n):
        start = np.clip(meet + rng.uniform(0.1, 0.17) * np.array([np.cos(a), np.sin(a)]), [-0.25, -0.14], [0.25, 0.2])
        body = _body(rng, "ball" if rng.random() < 0.5 else "block", start, bouncy=rng.random() < 0.5,
                     friction=float(rng.uniform(0.02, 0.15)))
        _roll(body, (meet - start) / arrive)
        bodies.append(body)
    return _Scene(bodies, info={"meeting_point": meet.round(4).tolist()})


def _sample_roll(rng: np.random.Generator) -> _Scene:
    """1-3 balls rolling on the table; often one starts at rest on a ramp at one side."""
    bodies, statics, info, side = [], "", {"ramp": None}, 0.0
    if rng.random() < 0.6:
        side, tilt, length, half_t = float(rng.choice([-1.0, 1.0])), rng.uniform(0.25, 0.4), 0.18, 0.008
        pitch = -side * tilt  # rotation about y: the ramp rises towards x = side * inf
        axis, normal = np.array([np.cos(pitch), 0, -np.sin(pitch)]), np.array([np.sin(pitch), 0, np.cos(pitch)])
        centre = np.array([side * rng.uniform(0.15, 0.2), rng.uniform(-0.04, 0.12),
                           length / 2 * np.sin(tilt) + half_t * np.cos(tilt)])  # low end on the table
        statics = _box("ramp", (length / 2, 0.04, half_t), centre, (0, pitch, 0))
        ball = _body(rng, "ball", centre[:2])
        ball.pos = (centre + side * 0.3 * length * axis + (half_t + ball.size + 0.001) * normal).tolist()
        bodies.append(ball)
        info["ramp"] = {"centre": centre.round(4).tolist(), "tilt": round(float(tilt), 4)}
    x_low, x_high = sorted((0.0, -side * 0.15)) if bodies else (-0.14, 0.14)  # clear of the ramp
    for xy in _spread(rng, int(rng.integers(0 if bodies else 1, 3)), 0.08, (x_low, -0.08), (x_high, 0.12)):
        ball, a = _body(rng, "ball", xy, bouncy=rng.random() < 0.5), rng.uniform(0, 2 * np.pi)
        _roll(ball, rng.uniform(0.15, 0.45) * np.array([np.cos(a), np.sin(a)]))
        bodies.append(ball)
    return _Scene(bodies, statics, info)


def _occluder(rng: np.random.Generator, half_width: float, height: float) -> tuple[str, np.ndarray]:
    pos = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.0), height / 2])
    return _box("occluder", (half_width, 0.012, height / 2), pos, group=OCCLUDER_GROUP), pos


def _sample_occlude(rng: np.random.Generator) -> _Scene:
    """1-2 objects crossing behind an opaque wall (tall enough to hide them); sometimes a block in front."""
    statics, wall = _occluder(rng, rng.uniform(0.06, 0.09), rng.uniform(0.15, 0.19))
    bodies = []
    for lane in rng.permutation([0.06, 0.1])[: int(rng.integers(1, 3))]:
        direction = float(rng.choice([-1.0, 1.0]))
        start = [wall[0] - direction * rng.uniform(0.14, 0.2), wall[1] + lane + rng.uniform(-0.01, 0.01)]
        shape = "ball" if rng.random() < 0.6 else "block"
        body = _body(rng, shape, start, friction=0.6 if shape == "ball" else 0.01)  # blocks slide on
        _roll(body, [direction * rng.uniform(0.2, 0.32), 0.0])
        bodies.append(body)
    if rng.random() < 0.5:
        yaw = rng.uniform(0, np.pi)
        bodies.append(_body(rng, "block", [rng.uniform(-0.2, 0.2), wall[1] - rng.uniform(0.08, 0.12)],
                            quat=(np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))))
    return _Scene(bodies, statics, {"occluder": wall.round(4).tolist()})


def _probe_occlusion(rng: np.random.Generator, frames: int) -> _Scene:
    """A ball rolling at constant speed behind a wall, hidden around the middle frame."""
    statics, wall = _occluder(rng, 0.07, 0.16)
    direction, reach, radius = float(rng.choice([-1.0, 1.0])), 0.2, float(rng.uniform(0.02, 0.026))
    ball = _body(rng, "ball", [wall[0] - direction * reach, wall[1] + 0.1], z=radius)
    ball.size = radius
    _roll(ball, [direction * 2 * reach * scene.CONTROL_HZ / max(frames - 1, 1), 0.0])
    return _Scene([ball], statics, {"occluder": wall.round(4).tolist()})


def _probe_unsupported(rng: np.random.Generator, frames: int) -> _Scene:
    """A ball or block released at rest in mid air."""
    shape = "ball" if rng.random() < 0.5 else "block"
    body = _body(rng, shape, rng.uniform([-0.12, -0.1], [0.12, 0.02]), z=rng.uniform(0.15, 0.25))
    if shape == "block":
        body.quat = _random_quat(rng)
    return _Scene([body], info={"release_height": round(body.pos[2], 4)})


def _probe_wall_bounce(rng: np.random.Generator, frames: int) -> _Scene:
    """A bouncy ball rolling into a wall standing across its path."""
    side = float(rng.choice([-1.0, 1.0]))
    wall = np.array([side * rng.uniform(0.16, 0.2), rng.uniform(-0.02, 0.08), 0.04])
    ball = _body(rng, "ball", [wall[0] - side * rng.uniform(0.16, 0.22), wall[1] + rng.uniform(-0.03, 0.03)],
                 bouncy=True)
    _roll(ball, [side * rng.uniform(0.3, 0.45), 0.0])  # slow enough not to reach the far rim as well
    return _Scene([ball], _box("wall", (0.012, 0.1, 0.04), wall), {"wall": wall.round(4).tolist()})


# ----------------------------------------------------------------------------- tools and capability probes
TOOL_RADIUS = 0.008  # m: a stick's or hook's capsule radius
HOOK_END = 0.09  # m: the hook's perpendicular end, long enough to pass beside the largest object


def _tool_geoms(rng: np.random.Generator, hook: bool, length: float, avoid: str = "") -> tuple[str, str]:
    """Capsules of a stick (``hook`` False) or an L-shaped hook in the mover's frame: the tip at the origin, the
    shaft back along -x to the handle, the hook's end from the tip along +y. Dark as ToolPull's hook, or a
    jittered palette color other than ``avoid`` (the object's); returns (MJCF, color name)."""
    color = "dark" if rng.random() < 0.5 else str(rng.choice([c for c in scene.COLORS if c != avoid]))
    rgb = np.array([0.16, 0.16, 0.2]) if color == "dark" else np.array(scene.COLORS[color][:3])
    rgba = _fmt([*np.clip(rgb + rng.uniform(-0.06, 0.06, 3), 0, 1), 1.0])
    r = TOOL_RADIUS
    geoms = f'<geom name="tool_shaft" type="capsule" size="{r}" fromto="{-length} 0 0 0 0 0" rgba="{rgba}"/>'
    if hook:
        geoms += f'<geom name="tool_end" type="capsule" size="{r}" fromto="0 0 0 0 {HOOK_END} 0" rgba="{rgba}"/>'
    return geoms, color


def _tool_action(rng: np.random.Generator, action: str, obj: _Body, hook: bool, travel: float,
                 speed: float, lower: bool) -> tuple[_Mover, dict] | None:
    """A tool that pushes (``action`` "push": the tip into the object, moving forward) or pulls ("pull": the hook's
    end behind the object, moving back towards the handle) ``obj`` over ``travel`` m at ``speed`` m/s, after
    coming down from above when ``lower``; None when the motion would leave the table."""
    yaw = rng.uniform(-np.pi, np.pi)
    u, v = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    p = np.asarray(obj.pos[:2], float)
    gap = obj.size + TOOL_RADIUS + rng.uniform(0.005, 0.03)
    if action == "push":
        tip, direction = p - u * gap, u
    else:  # the object beside the shaft, on the handle side of the hook's end
        tip, direction = p + u * gap - v * (HOOK_END / 2 + rng.uniform(-0.008, 0.008)), -u
    length = rng.uniform(0.14, 0.2)
    end = tip + direction * travel
    handle_start, handle_end = tip - u * length, end - u * length
    inside = [np.all(np.abs(q) < [0.27, 0.21]) for q in (end, handle_start, handle_end)]
    if not all(inside) or np.any(np.abs(p + direction * travel) > [0.22, 0.17]):
        return None
    geoms, color = _tool_geoms(rng, hook, length, avoid=obj.color)
    z, t0 = TOOL_RADIUS + 0.002, 0.0
    points = [(0.0, *tip, 0.12 if lower else z, yaw)]
    if lower:
        t0 = 0.3
        points.append((t0, *tip, z, yaw))
    points.append((t0 + travel / speed, *end, z, yaw))
    info = {"tool": "hook" if hook else "stick", "action": action, "tool_color": color,
            "tool_path": np.round(points, 4).tolist()}
    return _Mover(geoms, points), info


def _sample_tool(rng: np.random.Generator) -> _Scene:
    """A stick or hook, moved by an invisible hand, that pushes an object ahead of its tip or pulls it back with
    its hooked end; 0-2 more objects around (sometimes in the way)."""
    for _ in range(100):
        hook = rng.random() < 0.6
        action = "pull" if hook and rng.random() < 0.6 else "push"
        pts = _spread(rng, 1 + int(rng.integers(0, 3)), 0.09, (-0.15, -0.1), (0.15, 0.13))
        bodies = [_body(rng, "ball" if rng.random() < 0.4 else "block", xy, friction=float(rng.uniform(0.2, 0.8)))
                  for xy in pts]
        made = _tool_action(rng, action, bodies[0], hook, rng.uniform(0.1, 0.22), rng.uniform(0.12, 0.3),
                            lower=rng.random() < 0.4)
        if made is not None:
            mover, info = made
            return _Scene(bodies, info=info, movers=[mover])
    raise RuntimeError("envs.synthetic: no tool motion fits on the table")


def _ramp(rng: np.random.Generator, side: float, tilt: float, length: float = 0.18, y=(-0.02, 0.08),
          x=(0.1, 0.16)) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, float]:
    """A ramp at ``side`` (+-1: rising towards +-x): (MJCF, centre, axis, normal, pitch); ``side * axis`` points
    up the slope, ``normal`` out of its top face."""
    half_t, pitch = 0.008, -side * tilt
    axis, normal = np.array([np.cos(pitch), 0, -np.sin(pitch)]), np.array([np.sin(pitch), 0, np.cos(pitch)])
    centre = np.array([side * rng.uniform(*x), rng.uniform(*y), length / 2 * np.sin(tilt) + half_t * np.cos(tilt)])
    return _box("ramp", (length / 2, 0.04, half_t), centre, (0, pitch, 0)), centre, axis, normal, pitch


def _on_ramp(body: _Body, centre, axis, normal, side: float, along: float, pitch: float) -> None:
    """Rest ``body`` on the ramp ``along`` m up the slope from its centre, a block flat on it."""
    body.pos = (centre + side * along * axis + (0.008 + body.size + 0.001) * normal).tolist()
    if body.shape == "block":
        body.quat = (float(np.cos(pitch / 2)), 0.0, float(np.sin(pitch / 2)), 0.0)


def _probe_reappear(rng: np.random.Generator, frames: int) -> _Scene:
    """A block slides from rest down a ramp, passes behind a wall at the ramp's foot, and comes out on the table."""
    side, tilt = float(rng.choice([-1.0, 1.0])), rng.uniform(*REAPPEAR_TILT)
    ramp, centre, axis, normal, pitch = _ramp(rng, side, tilt)
    block = _body(rng, "block", centre[:2], friction=float(rng.uniform(*REAPPEAR_FRICTION)))
    block.size = float(rng.uniform(0.018, 0.024))
    _on_ramp(block, centre, axis, normal, side, REAPPEAR_START, pitch)
    foot = centre[0] - side * 0.09 * np.cos(tilt)
    wall = np.array([foot - side * REAPPEAR_WALL[1], centre[1] - 0.07, 0.065])
    occluder = _box("occluder", (REAPPEAR_WALL[0], 0.01, 0.065), wall, group=OCCLUDER_GROUP)
    return _Scene([block], ramp + occluder, {"occluder": wall.round(4).tolist(), "ramp_side": side})


def _probe_contact(rng: np.random.Generator, frames: int) -> _Scene:
    """A ball rolls from rest down a ramp into a light, slippery object on the table: the struck one (obj0)
    moves away from the ramp."""
    side, tilt = float(rng.choice([-1.0, 1.0])), rng.uniform(0.3, 0.4)
    ramp, centre, axis, normal, pitch = _ramp(rng, side, tilt)
    foot = centre[0] - side * 0.09 * np.cos(tilt)
    struck = _body(rng, "block" if rng.random() < 0.6 else "ball", [foot - side * rng.uniform(0.03, 0.05),
                                                                     centre[1] + rng.uniform(-0.01, 0.01)],
                   friction=float(rng.uniform(0.2, 0.35)))
    struck.mass = float(rng.uniform(0.03, 0.08))
    ball = _body(rng, "ball", centre[:2])
    ball.mass = float(rng.uniform(0.2, 0.3))
    _on_ramp(ball, centre, axis, normal, side, CONTACT_START, pitch)
    return _Scene([struck, ball], ramp, {"ramp_side": side, "direction": [-side, 0.0]})


def _probe_support(rng: np.random.Generator, frames: int) -> _Scene:
    """A block overhanging a raised platform's edge (its centre past the edge) topples off and falls to the table;
    another object resting wholly on the platform (obj1) stays."""
    side, height = float(rng.choice([-1.0, 1.0])), rng.uniform(0.07, 0.1)
    plat = np.array([rng.uniform(-0.06, 0.06), rng.uniform(-0.02, 0.08), height / 2])
    half = (0.07, 0.05, height / 2)
    edge = plat[0] + side * half[0]
    falling = _body(rng, "block", [0, 0], z=0.0)
    falling.pos = [edge + side * falling.size * rng.uniform(0.4, 0.8), plat[1] + rng.uniform(-0.02, 0.02),
                   height + falling.size + 0.001]
    resting = _body(rng, "block" if rng.random() < 0.5 else "ball", [0, 0], z=0.0)
    resting.pos = [plat[0] - side * rng.uniform(0.0, 0.03), plat[1] + rng.uniform(-0.015, 0.015),
                   height + resting.size + 0.001]
    return _Scene([falling, resting], _box("wall", half, plat), {"platform": plat.round(4).tolist(), "side": side},
                  others={"supported": "obj1"})


ROPE_SEGMENTS, ROPE_SEG_LEN, ROPE_RADIUS = 8, 0.026, 0.011
REAPPEAR_TILT, REAPPEAR_FRICTION, REAPPEAR_WALL = (0.5, 0.58), (0.15, 0.2), (0.04, 0.01)  # wall: half width, offset (m)
REAPPEAR_START, CONTACT_START = 0.06, 0.02  # m up the ramp from its centre: hidden at ~0.3 s, out by 0.4 s


def _rope_xml(rgba: str) -> str:
    """A free chain of ``ROPE_SEGMENTS`` capsules (geoms ``rope_<i>``) joined by springy hinge pairs."""
    attrs = 'stiffness="0.002" damping="0.001" armature="0.0001" range="-1.3 1.3"'
    inner = ""
    for i in reversed(range(1, ROPE_SEGMENTS)):
        inner = (f'<body name="rope{i}" pos="{ROPE_SEG_LEN} 0 0">'
                 f'<joint type="hinge" axis="0 0 1" pos="{-ROPE_SEG_LEN / 2} 0 0" {attrs}/>'
                 f'<joint type="hinge" axis="0 1 0" pos="{-ROPE_SEG_LEN / 2} 0 0" {attrs}/>'
                 f'<geom name="rope_{i}" type="capsule" fromto="{-ROPE_SEG_LEN / 2} 0 0 {ROPE_SEG_LEN / 2} 0 0" '
                 f'size="{ROPE_RADIUS}" mass="0.015" rgba="{rgba}" friction="1 0.005 0.0001"/>{inner}</body>')
    return (f'<body name="rope0"><freejoint name="rope_joint"/>'
            f'<geom name="rope_0" type="capsule" fromto="{-ROPE_SEG_LEN / 2} 0 0 {ROPE_SEG_LEN / 2} 0 0" '
            f'size="{ROPE_RADIUS}" mass="0.015" rgba="{rgba}" friction="1 0.005 0.0001"/>{inner}</body>')


def _probe_rope(rng: np.random.Generator, frames: int) -> _Scene:
    """A straight rope released in mid air across a block (obj0): it falls and drapes over it."""
    block = _body(rng, "block", rng.uniform([-0.06, -0.02], [0.06, 0.08]))
    block.size, block.mass = float(rng.uniform(0.025, 0.032)), 1.0
    block.pos = [block.pos[0], block.pos[1], block.size + 0.001]
    yaw = rng.uniform(-0.6, 0.6) + (np.pi if rng.random() < 0.5 else 0.0)
    span = (ROPE_SEGMENTS - 1) * ROPE_SEG_LEN
    offset = rng.uniform(-0.3, 0.3) * span  # where along the rope the block is
    start = np.array(block.pos[:2]) - (span / 2 + offset) * np.array([np.cos(yaw), np.sin(yaw)])
    z = 2 * block.size + rng.uniform(0.07, 0.11)
    color = str(rng.choice([c for c in scene.COLORS if c != block.color]))
    rgba = _fmt([*np.clip(np.array(scene.COLORS[color][:3]) + rng.uniform(-0.06, 0.06, 3), 0, 1), 1.0])

    def setup(model: mujoco.MjModel, data: mujoco.MjData) -> None:
        q = model.jnt_qposadr[model.joint("rope_joint").id]
        data.qpos[q:q + 3] = [*start, z]
        data.qpos[q + 3:q + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]

    info = {"rope_start": [*np.round(start, 4).tolist(), round(float(z), 4)], "rope_yaw": round(float(yaw), 4),
            "rope_color": color}
    return _Scene([block], info=info, extra_bodies=_rope_xml(rgba), setup=setup, target="rope")


def _probe_tool(rng: np.random.Generator, frames: int) -> _Scene:
    """A hook, its end already behind an object (obj0), pulls it back towards its handle."""
    for _ in range(100):
        obj = _body(rng, "block" if rng.random() < 0.6 else "ball", rng.uniform([-0.12, -0.08], [0.12, 0.1]),
                    friction=float(rng.uniform(0.3, 0.6)))
        made = _tool_action(rng, "pull", obj, True, rng.uniform(0.14, 0.2), rng.uniform(0.25, 0.32), lower=False)
        if made is not None:
            return _Scene([obj], info=made[1], movers=[made[0]])
    raise RuntimeError("envs.synthetic: no tool probe fits on the table")


_CLIP_SAMPLERS: dict[str, Callable[[np.random.Generator], _Scene]] = {
    "bounce": _sample_bounce, "fall": _sample_fall, "collide": _sample_collide, "roll": _sample_roll,
    "occlude": _sample_occlude, "tool": _sample_tool,
    "capabilities": lambda rng: _PROBE_SAMPLERS[str(rng.choice(CAPABILITY_PROBES))](rng, 0)}
_PROBE_SAMPLERS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "occlusion": _probe_occlusion, "unsupported": _probe_unsupported, "wall_bounce": _probe_wall_bounce,
    "reappear": _probe_reappear, "contact": _probe_contact, "support": _probe_support, "rope": _probe_rope,
    "tool": _probe_tool}


def _rims() -> str:
    """Low visible rims at the table edges, and invisible tall walls on them that do the stopping."""
    tx, ty, t = *scene.TABLE_HALF, 0.006
    geoms = []
    for pos, half in [((tx - t, 0), (t, ty)), ((t - tx, 0), (t, ty)), ((0, ty - t), (tx, t)), ((0, t - ty), (tx, t))]:
        geoms.append(f'<geom type="box" size="{_fmt(half)} 0.015" pos="{_fmt(pos)} 0.015" rgba="{RGBA["rim"]}" '
                     f'contype="0" conaffinity="0"/>')
        geoms.append(f'<geom type="box" size="{_fmt(half)} 0.3" pos="{_fmt(pos)} 0.3" group="{HIDDEN_GROUP}"/>')
    return "".join(geoms)


# ----------------------------------------------------------------------------- rendering
class _Renderer:
    """An offscreen GL context, MuJoCo render context and scene, shared by every clip's model in a process."""

    def __init__(self, model: mujoco.MjModel, size: int):
        self.size = size
        self.gl = gl_context.GLContext(size, size)
        self.gl.make_current()
        vis, quality = model.vis.global_, model.vis.quality
        old = (vis.offwidth, vis.offheight, quality.offsamples)
        vis.offwidth = vis.offheight = size  # the framebuffer is sized from the model when the context is made
        quality.offsamples = quality.offsamples if ANTIALIAS else 0
        try:
            self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        finally:
            vis.offwidth, vis.offheight, quality.offsamples = old
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        self.scene = mujoco.MjvScene(model, maxgeom=256)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION, mujoco.mjtRndFlag.mjRND_SKYBOX):
            self.scene.flags[flag] = False
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self.rect = mujoco.MjrRect(0, 0, size, size)

    def draw(self, model: mujoco.MjModel, data: mujoco.MjData, option: mujoco.MjvOption,
             segment: bool = False) -> np.ndarray:
        """The front camera image (size, size, 3) uint8; with ``segment``, (size, size) geom ids (-1: none)."""
        self.gl.make_current()
        self.camera.fixedcamid = model.camera("front").id
        mujoco.mjv_updateScene(model, data, option, None, self.camera, mujoco.mjtCatBit.mjCAT_ALL, self.scene)
        self.scene.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = self.scene.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = segment
        image = np.empty((self.size, self.size, 3), np.uint8)
        mujoco.mjr_render(self.rect, self.scene, self.context)
        mujoco.mjr_readPixels(image, None, self.rect, self.context)
        image = np.ascontiguousarray(image[::-1])  # OpenGL rows run bottom-up
        if not segment:
            return image
        seg = image[..., 0] + (image[..., 1].astype(np.int64) << 8) + (image[..., 2].astype(np.int64) << 16)
        lookup = np.full(self.scene.ngeom + 2, -1, np.int64)  # segment id + 1 -> geom id (0: background)
        for g in self.scene.geoms[: self.scene.ngeom]:
            if g.segid >= 0 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lookup[g.segid + 1] = g.objid
        return lookup[np.minimum(seg, len(lookup) - 1)]


_RENDERERS: dict[tuple[int, int, bool], _Renderer] = {}  # (pid, size, ANTIALIAS) -> renderer; never a parent's
_FORKED_AFTER_GL = False  # set in a child forked after its parent initialised EGL


def _note_fork() -> None:
    global _FORKED_AFTER_GL
    _FORKED_AFTER_GL = _FORKED_AFTER_GL or getattr(sys.modules.get("mujoco.egl"), "EGL_DISPLAY", None) is not None


os.register_at_fork(after_in_child=_note_fork)


def _renderer(model: mujoco.MjModel, size: int) -> _Renderer:
    key = (os.getpid(), size, ANTIALIAS)
    if key not in _RENDERERS:
        if _FORKED_AFTER_GL:
            raise RuntimeError(
                "envs.synthetic: this process was forked after its parent initialised OpenGL (EGL), whose state "
                "does not survive fork (rendering would hang). Start workers with "
                "multiprocessing.get_context('forkserver') or 'spawn', or fork before the parent renders.")
        _RENDERERS[key] = _Renderer(model, size)
    return _RENDERERS[key]


def _project(model: mujoco.MjModel, data: mujoco.MjData, points: np.ndarray, size: int) -> np.ndarray:
    """World points (N, 3) -> pixel coordinates (N, 2): (column, row) from the image's top-left corner."""
    cam = model.camera("front").id
    rel = (points - data.cam_xpos[cam]) @ data.cam_xmat[cam].reshape(3, 3)  # camera frame: x right, y up, z back
    focal = 0.5 * size / np.tan(np.radians(model.cam_fovy[cam]) / 2)
    return np.stack([size / 2 + focal * rel[:, 0] / -rel[:, 2], size / 2 - focal * rel[:, 1] / -rel[:, 2]], axis=1)


# ----------------------------------------------------------------------------- simulation
def _unstable(data: mujoco.MjData) -> bool:
    return (data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0 or not np.all(np.isfinite(data.qpos))
            or np.abs(data.qpos).max() > 10.0)


def _simulate(spec: _Scene, frames: int, size: int,
              probe: bool) -> tuple[np.ndarray, dict, np.ndarray | None, dict[str, np.ndarray]] | None:
    """Render ``frames`` frames at CONTROL_HZ, and for a probe its target's (and others') true pixels; None if
    unstable."""
    bodies = "".join(b.xml(f"obj{i}") for i, b in enumerate(spec.bodies))
    movers = "".join(f'<body name="mover{i}" mocap="true">{m.geoms}</body>' for i, m in enumerate(spec.movers))
    xml = scene.scene_xml(_rims() + spec.statics + bodies + spec.extra_bodies + movers, model_name="synthetic",
                          timestep=TIMESTEP)
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    ids = [model.body(f"obj{i}").id for i in range(len(spec.bodies))]
    for i, body in zip(ids, spec.bodies, strict=True):
        dof = model.jnt_dofadr[model.body_jntadr[i]]
        data.qvel[dof:dof + 6] = [*body.vel, *body.spin]
    if spec.setup is not None:
        spec.setup(model, data)
    mocap = [model.body_mocapid[model.body(f"mover{i}").id] for i in range(len(spec.movers))]

    def place_movers() -> None:
        for m, mover in zip(mocap, spec.movers, strict=True):
            data.mocap_pos[m], data.mocap_quat[m] = mover.pose(data.time)

    place_movers()
    mujoco.mj_forward(model, data)
    targets = [g for g in range(model.ngeom) if model.geom(g).name == spec.target
               or model.geom(g).name.startswith(spec.target + "_")]
    renderer, option = _renderer(model, size), mujoco.MjvOption()
    images, positions = np.empty((frames, size, size, 3), np.uint8), []
    masks = np.zeros((frames, size, size), bool) if probe else None
    others = {role: np.zeros((frames, size, size), bool) for role in spec.others} if probe else {}
    track: dict[str, list] = {"pixels": [], "visible": [], "visible_fraction": []}
    for t in range(frames):
        if t:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if spec.movers:  # the hand moves every physics step
                    for _ in range(SUBSTEPS):
                        place_movers()
                        mujoco.mj_step(model, data)
                else:
                    mujoco.mj_step(model, data, nstep=SUBSTEPS)
            if _unstable(data):
                return None
        positions.append(data.xpos[ids].round(4).tolist())
        images[t] = renderer.draw(model, data, option)
        if probe:
            masks[t], fraction = _true_pixels(renderer, model, data, option, targets)
            for role, geom in spec.others.items():
                others[role][t] = _true_pixels(renderer, model, data, option, [model.geom(geom).id])[0]
            centre = data.geom_xpos[targets].mean(axis=0, keepdims=True)
            track["pixels"].append(_project(model, data, centre, size)[0].round(2).tolist())
            track["visible_fraction"].append(round(fraction, 4))
            track["visible"].append(fraction >= 0.5)
    return images, {"positions": positions, **(track if probe else {})}, masks, others


def _true_pixels(renderer: _Renderer, model: mujoco.MjModel, data: mujoco.MjData, option: mujoco.MjvOption,
                 geoms: list[int]) -> tuple[np.ndarray, float]:
    """Where ``geoms`` are in the image with occluders hidden, (size, size) bool, and the fraction of it seen."""
    seen = np.isin(renderer.draw(model, data, option, segment=True), geoms)
    if not np.any(model.geom_group == OCCLUDER_GROUP):
        return seen, float(seen.any())
    option.geomgroup[OCCLUDER_GROUP] = 0
    true = np.isin(renderer.draw(model, data, option, segment=True), geoms)
    option.geomgroup[OCCLUDER_GROUP] = 1
    return true, float(seen.sum() / max(true.sum(), 1))


def _generate(seed: int, frames: int, image_size: int, kind: str, sample: Callable[[np.random.Generator], _Scene],
              root: np.random.Generator, probe: bool) -> SyntheticClip:
    for attempt in range(MAX_ATTEMPTS):
        sub_seed = int(root.integers(2**63))
        spec = sample(np.random.default_rng(sub_seed))
        if (result := _simulate(spec, frames, image_size, probe)) is None:
            continue
        images, sim_meta, masks, others = result
        meta = {"seed": int(seed), "kind": kind, "attempt": attempt, "sub_seed": sub_seed, "fps": scene.CONTROL_HZ,
                "timestep": TIMESTEP, "n_objects": len(spec.bodies),
                "objects": [b.meta() for b in spec.bodies], **spec.info, **sim_meta}
        return SyntheticClip(images, kind, meta, masks, others)
    raise RuntimeError(f"envs.synthetic: {kind!r} scenes for seed {seed} were unstable {MAX_ATTEMPTS} times")


def _check(seed: int, frames: int, image_size: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size!r}")


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple, or a ValueError naming the unknown ones and the valid ones."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown synthetic clip kind(s) {unknown or kinds!r}; valid kinds: {', '.join(ALL_KINDS)}")
    return kinds


def make_clip(seed: int, frames: int = 16, image_size: int = 64, kind: str | None = None,
              kinds: Sequence[str] = KINDS) -> SyntheticClip:
    """A pre-training clip: ``frames`` (T, H, W, 3) uint8 at CONTROL_HZ; ``kind`` from ALL_KINDS, or None: drawn
    uniformly from ``kinds`` (default KINDS, without tools: the same clip per seed as before tools existed)."""
    if kind is not None:
        check_kinds([kind])
    kinds = check_kinds(kinds)
    _check(seed, frames, image_size)
    root = np.random.default_rng(seed)
    kind = str(root.choice(kinds)) if kind is None else kind
    return _generate(seed, frames, image_size, kind, _CLIP_SAMPLERS[kind], root, probe=False)


def make_probe(kind: str, seed: int, frames: int = 16, image_size: int = 64) -> SyntheticClip:
    """A physics probe clip; ``masks`` (T, H, W) bool is where its object truly is, even when hidden.

    ``meta`` adds, per frame: ``pixels`` (column, row) of the object's centre, ``visible_fraction`` (the share
    of its true pixels the camera sees) and ``visible`` (that share >= 0.5). ``other_masks`` has the true pixels
    of a probe's other scored objects: for ``support``, ``"supported"``, the object resting on the platform.
    """
    if kind not in _PROBE_SAMPLERS:
        raise ValueError(f"unknown probe kind {kind!r}; valid kinds: {', '.join(_PROBE_SAMPLERS)}")
    _check(seed, frames, image_size)
    sampler = _PROBE_SAMPLERS[kind]
    return _generate(seed, frames, image_size, kind, lambda rng: sampler(rng, frames),
                     np.random.default_rng(seed), probe=True)


def strip(seed: int = 0, columns: int = 8, scale: int = 2) -> np.ndarray:
    """The README image: a row per clip kind, then per probe kind, of every other frame of a 16-frame clip."""
    clips = [make_clip(seed, kind=k) for k in KINDS] + [make_probe(k, seed) for k in PROBE_KINDS]
    rows = [np.concatenate([np.pad(f, ((1, 1), (1, 1), (0, 0)), constant_values=255)
                            for f in c.frames[: 2 * columns: 2]], axis=1) for c in clips]
    return np.concatenate(rows, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)


if __name__ == "__main__":  # python -m envs.synthetic [docs/img/synthetic_strip.png]
    import imageio.v3 as iio

    out = sys.argv[1] if len(sys.argv) > 1 else "docs/img/synthetic_strip.png"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    iio.imwrite(out, strip())
    print(out)
