"""Synthetic physics video (envs/synthetic.py): shapes, determinism, physics sanity, probes, forked workers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from envs import synthetic
from envs.synthetic import KINDS, PROBE_KINDS, make_clip, make_probe


@pytest.fixture(scope="module")
def clips():
    return {kind: make_clip(3, kind=kind) for kind in KINDS}


def test_shapes_dtype_and_json_meta():
    clip = make_clip(0, frames=6, image_size=32)
    assert clip.frames.shape == (6, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.kind in KINDS and clip.masks is None
    meta = json.loads(json.dumps(clip.meta))  # JSON-able as is
    assert meta["kind"] == clip.kind and meta["fps"] == 10 and 1 <= meta["n_objects"] <= 4
    assert len(meta["positions"]) == 6 and np.array(meta["positions"]).shape == (6, meta["n_objects"], 3)
    for obj in meta["objects"]:
        assert obj["color"] in synthetic.scene.COLORS and obj["mass"] > 0 and obj["size"] > 0
        assert len(obj["rgba"]) == 4 and len(obj["vel"]) == 3


def test_same_seed_same_frames_other_seed_differs():
    a = make_clip(11)
    other = make_clip(12)
    b = make_clip(11)  # after another clip has used the shared renderer
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.meta == b.meta and a.kind == b.kind
    assert not np.array_equal(a.frames, other.frames)
    assert {make_clip(s, frames=1, image_size=16).kind for s in range(40)} == set(KINDS)  # random kinds


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_moves_and_is_not_blank(clips, kind):
    frames = clips[kind].frames.astype(np.int16)
    assert clips[kind].kind == kind and frames.shape == (16, 64, 64, 3)
    assert frames.std() > 10  # a table and objects, not a flat image
    change = np.abs(frames[1:] - frames[:-1]).max(axis=-1)  # (T-1, H, W)
    assert (change > 30).sum() > 20  # objects visibly move between frames
    first_last = np.abs(frames[-1] - frames[0]).max(axis=-1)
    assert (first_last > 30).sum() > 10
    z = np.array(clips[kind].meta["positions"])[..., 2]
    assert np.all(z > -0.01) and np.all(np.abs(np.array(clips[kind].meta["positions"])[..., :2]) < 0.33)  # on table


def test_fall_objects_drop():
    for seed in range(3):
        positions = np.array(make_clip(seed, frames=8, image_size=16, kind="fall").meta["positions"])  # (T, N, 3)
        drop = positions[0, :, 2] - positions[-1, :, 2]
        assert drop.max() > 0.04, drop  # the top of the pile falls at least 4 cm
        assert positions[-1, :, 2].min() < 0.04  # something lies on the table at the end


def test_occlusion_probe_hides_then_shows_and_masks_track_the_object():
    for seed in range(2):
        probe = make_probe("occlusion", seed)
        visible = probe.meta["visible"]
        assert probe.masks.shape == (16, 64, 64) and probe.masks.dtype == bool
        hidden = [t for t, v in enumerate(visible) if not v]
        assert hidden and visible[0] and visible[-1] and any(visible[t] for t in range(hidden[0]))
        assert all(probe.masks[t].sum() >= 5 for t in range(16))  # the true location, even when hidden
        for t in range(16):  # the mask's centroid is the object's projected centre
            rows, cols = np.nonzero(probe.masks[t])
            np.testing.assert_allclose([cols.mean() + 0.5, rows.mean() + 0.5], probe.meta["pixels"][t], atol=1.5)
        x = np.array(probe.meta["positions"])[:, 0, 0]
        assert np.ptp(np.diff(x)) < 0.1 * np.abs(np.diff(x)).mean()  # constant velocity
        json.dumps(probe.meta)


@pytest.mark.parametrize("kind", PROBE_KINDS)
def test_probes_are_deterministic(kind):
    a, b = make_probe(kind, 1, frames=4, image_size=32), make_probe(kind, 1, frames=4, image_size=32)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.kind == kind and a.masks.shape == (4, 32, 32) and len(a.meta["visible"]) == 4


def test_unsupported_falls_and_wall_bounce_reverses():
    probe = make_probe("unsupported", 4, frames=8, image_size=32)
    z = np.array(probe.meta["positions"])[:, 0, 2]
    assert z[0] > 0.14 and z[-1] < 0.04 and probe.masks.shape == (8, 32, 32) and probe.masks.any(axis=(1, 2)).all()
    probe = make_probe("wall_bounce", 4)
    vx = np.diff(np.array(probe.meta["positions"])[:, 0, 0])
    assert vx[0] * vx[-1] < 0  # towards the wall, then back
    assert all(probe.meta["visible"]) and probe.masks.any(axis=(1, 2)).all()


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match="bounce, fall, collide, roll, occlude"):
        make_clip(0, kind="explode")
    with pytest.raises(ValueError, match="occlusion, unsupported, wall_bounce"):
        make_probe("bounce", 0)
    with pytest.raises(ValueError, match="seed"):
        make_clip(-1)


def test_unstable_simulation_is_redrawn_deterministically(monkeypatch):
    calls = []

    def unstable_once(data):
        calls.append(1)
        return len(calls) == 1  # the first scene "explodes" after its first physics frame

    monkeypatch.setattr(synthetic, "_unstable", unstable_once)
    clip = make_clip(5, frames=4, image_size=16)
    assert clip.meta["attempt"] == 1 and clip.frames.shape == (4, 16, 16, 3)
    calls.clear()
    np.testing.assert_array_equal(make_clip(5, frames=4, image_size=16).frames, clip.frames)
    monkeypatch.setattr(synthetic, "_unstable", lambda data: True)
    with pytest.raises(RuntimeError, match="unstable"):
        make_clip(5, frames=2, image_size=16)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_clips_in_forked_workers_match_the_parent():
    # A fresh interpreter: its parent process must not have rendered before forking (see the module docstring).
    result = _run("""
        import multiprocessing as mp
        from envs.synthetic import make_clip
        def work(seed):
            return make_clip(seed, frames=4, image_size=32).frames.tobytes().hex()
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(2) as pool:
                print(" ".join(pool.map(work, [0, 1, 2])))
    """)
    assert result.returncode == 0, result.stderr
    hashes = result.stdout.split()
    assert hashes == [make_clip(s, frames=4, image_size=32).frames.tobytes().hex() for s in range(3)]


def test_fork_after_parent_rendered_raises_instead_of_hanging():
    result = _run("""
        import multiprocessing as mp
        from envs.synthetic import make_clip
        def work(seed):
            return make_clip(seed, frames=2, image_size=16).kind
        if __name__ == "__main__":
            make_clip(0, frames=2, image_size=16)  # the parent renders first
            with mp.get_context("fork").Pool(1) as pool:
                try:
                    pool.map(work, [1])
                except RuntimeError as err:
                    print("raised:", err)
    """)
    assert result.returncode == 0, result.stderr
    assert "raised:" in result.stdout and "forkserver" in result.stdout


def test_tool_clips_only_when_asked_and_the_tool_moves_an_object():
    from envs.synthetic import ALL_KINDS, TOOL_KINDS

    assert "tool" in TOOL_KINDS and "tool" not in KINDS and set(ALL_KINDS) == {*KINDS, *TOOL_KINDS, "capabilities"}
    assert all(make_clip(s, frames=1, image_size=16).kind != "tool" for s in range(30))  # default mix: no tools
    assert "tool" in {make_clip(s, frames=1, image_size=16, kinds=ALL_KINDS).kind for s in range(30)}
    assert make_clip(5, frames=1, image_size=16).kind == make_clip(5, frames=1, image_size=16, kinds=KINDS).kind
    for seed in range(3):
        clip = make_clip(seed, frames=16, image_size=32, kind="tool")
        assert clip.meta["tool"] in ("stick", "hook") and clip.meta["action"] in ("push", "pull")
        assert clip.meta["action"] == "push" or clip.meta["tool"] == "hook"  # only a hook pulls
        moved = np.linalg.norm(np.subtract(clip.meta["positions"][-1][0][:2], clip.meta["positions"][0][0][:2]))
        assert moved > 0.03, (seed, clip.meta["action"], moved)  # the tool pushed or pulled its object
    a, b = make_clip(2, frames=6, image_size=32, kind="tool"), make_clip(2, frames=6, image_size=32, kind="tool")
    np.testing.assert_array_equal(a.frames, b.frames)
    with pytest.raises(ValueError, match="'hammer'.*occlude, tool"):
        make_clip(0, kinds=["bounce", "hammer"])


@pytest.fixture(scope="module")
def capability_probes():
    from envs.synthetic import CAPABILITY_PROBES

    return {kind: [make_probe(kind, seed, frames=9, image_size=64) for seed in range(3)] for kind in CAPABILITY_PROBES}


@pytest.mark.parametrize("kind", ["reappear", "contact", "support", "rope", "tool"])
def test_capability_probes_move_their_target_far_in_the_image(capability_probes, kind):
    for probe in capability_probes[kind]:
        assert probe.masks.shape == (9, 64, 64) and probe.masks[0].sum() >= 15
        pixels = np.array(probe.meta["pixels"])
        assert np.linalg.norm(pixels[-1] - pixels[0]) > 5, (kind, pixels)  # copying frame 0 is clearly wrong
        assert (probe.masks[0] & probe.masks[-1]).sum() < 0.8 * probe.masks[0].sum()
    again = make_probe(kind, 0, frames=9, image_size=64)
    np.testing.assert_array_equal(again.frames, capability_probes[kind][0].frames)


def test_capability_probe_physics(capability_probes):
    for probe in capability_probes["reappear"]:  # seen, then hidden behind the wall, then seen again
        v = probe.meta["visible"]
        first_hidden = v.index(False)
        assert v[0] and first_hidden > 0 and v[-1]
    for probe in capability_probes["contact"]:  # the struck object moves away from the ramp
        x = np.array(probe.meta["positions"])[:, 0, 0]
        assert (x[-1] - x[0]) * probe.meta["direction"][0] > 0.03
    for probe in capability_probes["support"]:  # the overhanging block falls, the supported one stays
        pos = np.array(probe.meta["positions"])
        assert pos[0, 0, 2] - pos[-1, 0, 2] > 0.04 and np.linalg.norm(pos[-1, 1] - pos[0, 1]) < 0.005
        supported = probe.other_masks["supported"]
        assert supported.shape == (9, 64, 64) and supported[0].sum() >= 10 and not (supported[0] & probe.masks[0]).any()
    assert capability_probes["tool"][0].other_masks == {}
    for probe in capability_probes["tool"]:  # pulled towards the hook's handle
        pos, path = np.array(probe.meta["positions"])[:, 0, :2], np.array(probe.meta["tool_path"])
        pull = path[-1, 1:3] - path[0, 1:3]
        assert (pos[-1] - pos[0]) @ pull / np.linalg.norm(pull) > 0.08
    for probe in capability_probes["rope"]:  # falls onto the block and lies there
        assert probe.meta["rope_start"][2] > 0.1
        rows = [np.nonzero(m)[0].mean() for m in probe.masks]
        assert rows[-1] - rows[0] > 3  # lower in the image


def test_capabilities_kind_draws_like_the_probes_for_a_reference_model():
    """Training clips of the probe distribution: each one a probe scene (with its target's meta), on any seed."""
    kinds = set()
    for seed in range(12):
        clip = make_clip(seed, frames=2, image_size=16, kind="capabilities")
        assert clip.kind == "capabilities" and clip.masks is None
        meta = clip.meta
        kinds.add("rope" if "rope_yaw" in meta else "tool" if "tool" in meta else "support" if "platform" in meta
                  else "reappear" if "occluder" in meta else "contact")
    assert kinds == {"reappear", "contact", "support", "rope", "tool"}
