"""`gr2-sim experiment capabilities`: five probes where copying the last frame is wrong, scored end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gr2_sim.cli import main
from gr2_sim.experiments import capabilities, common

CAPABILITIES = {"occlusion", "contact", "gravity", "deformable", "tool", "gravity_robot"}


def stamps(out, pattern):
    return {p: p.stat().st_mtime_ns for p in out.rglob(pattern)}


def test_copy_is_clearly_wrong_and_the_oracle_beats_it_on_every_probe(tmp_path):
    out = tmp_path / "cap"
    argv = ["experiment", "capabilities", "--out", str(out), "--probes", "4", "--image-size", "32"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["command"].startswith(f"gr2-sim experiment capabilities --out {out}")
    assert set(s["per_capability"]) == CAPABILITIES and s["probe_frames"] == 9 and s["runs"] == {}
    for capability, result in s["per_capability"].items():
        copy, oracle = result["copy"]["region_mse"], result["oracle"]["region_mse"]
        assert copy["n"] == 4 and oracle["n"] == 4, capability
        assert copy["ci95"][0] > 0.03, (capability, copy)  # copying frame 0 errs as much as a wrong color
        assert oracle["mean"] < 1e-4 and copy["mean"] > 100 * oracle["mean"] + 0.03
        diff = result["oracle"]["minus_copy_region_mse"]
        assert diff["ci95"][1] < -0.02 and diff["beats_copy"] == "yes"
        assert result["copy"]["new_place_mse"]["mean"] > 0.03 and result["copy"]["old_place_mse"]["mean"] > 0.03
        assert result["copy"]["new_place_closer"]["mean"] == 0 and result["oracle"]["new_place_closer"]["mean"] == 1
        assert result["copy"]["predicts_event"] == "no" and result["oracle"]["predicts_event"] == "yes"
    gravity = s["per_capability"]["gravity"]  # the object resting on the platform stays: copy is right there
    assert gravity["copy"]["supported_mse"]["mean"] < 0.005 and gravity["copy"]["supported_mse"]["n"] == 4
    assert "supported_mse" not in s["per_capability"]["tool"]["copy"]
    for name in s["figures"]:
        assert (out / name).stat().st_size > 1000
    assert sorted(s["figures"]) == sorted(f"{c}.png" for c in CAPABILITIES)
    before = stamps(out, "*.npz")
    assert len(before) == 6 * 4
    assert main(argv) == 0  # resumed: nothing rendered again
    assert stamps(out, "*.npz") == before


def test_scores_count_only_reappearing_frames_for_occlusion():
    clip = {"frames": np.zeros((5, 4, 4, 3), np.uint8), "masks": np.zeros((5, 4, 4), bool),
            "visible": np.array([True, False, True, True, False])}
    clip["masks"][:, 1, 1] = True
    clip["frames"][:, 1, 1] = 255
    pred = np.zeros((1, 4, 4, 4, 3), np.float32)  # predicts the object gone: error 1 inside its mask
    occ = capabilities.scores("occlusion", pred, [clip], stride=1)
    assert occ["region_mse"][0] == 1.0 and np.isnan(occ["new_place_mse"][0])  # frames 2, 3 only; it never moved
    assert capabilities.scores("contact", pred, [clip], stride=1)["region_mse"][0] == 1.0
    assert np.isnan(capabilities.scores("occlusion", pred[:, :1], [clip], stride=1)["region_mse"][0])  # frame 1 hidden


def test_new_place_closer_is_not_fooled_by_a_grey_frame():
    """The object moves one pixel right; a grey frame halves the squared error in the union region versus copy,
    yet draws the new place nearer the old background than the object: it is not credited with the event."""
    frames = np.full((2, 4, 4, 3), 140, np.uint8)  # table-like background
    frames[0, 1, 1] = frames[1, 1, 2] = (230, 30, 30)  # a red object at (1, 1), then at (1, 2)
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1, 1] = masks[1, 1, 2] = True
    clip = {"frames": frames, "masks": masks, "visible": np.ones(2, bool)}
    copy = frames[None, :1].astype(np.float32) / 255
    grey = np.full_like(copy, 0.5)
    truth = frames[None, 1:].astype(np.float32) / 255
    s = {name: capabilities.scores("contact", p, [clip], stride=1) for name, p in
         (("copy", copy), ("grey", grey), ("truth", truth))}
    assert s["grey"]["region_mse"][0] < s["copy"]["region_mse"][0]  # region MSE rewards hedging ...
    assert s["grey"]["new_place_closer"][0] == 0 == s["copy"]["new_place_closer"][0]  # ... this share does not
    assert s["truth"]["new_place_closer"][0] == 1 and s["truth"]["region_mse"][0] == 0


def test_with_a_tiny_model_and_its_untrained_twin(video_file, tmp_path, one_torch_thread):
    run = common.train_run(tmp_path / "runs" / "phase1", stage="video", data=str(video_file), preset="tiny", steps=2,
                           batch_size=4, seed=0, device="cpu", progress=False)
    out = tmp_path / "cap"
    argv = ["experiment", "capabilities", "--out", str(out), "--probes", "2", "--ckpt", f"phase1={run}",
            "--untrained", "--ddim-steps", "2"]
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["runs"]) == {"phase1", "untrained"}
    occlusion = s["per_capability"]["occlusion"]["phase1"]  # 2 frames at stride 1: the block is still hidden
    assert occlusion["region_mse"]["n"] == 0 and "ends before the event" in occlusion["note"]
    for capability, result in s["per_capability"].items():
        for label in ("phase1", "untrained") if capability != "occlusion" else ():
            region = result[label]["region_mse"]
            assert 0 <= region["mean"] <= 1 and result[label]["minus_copy_region_mse"]["beats_copy"] in ("yes", "no")
            assert 0 <= result[label]["new_place_closer"]["mean"] <= 1 and result[label]["predicts_event"] in ("yes", "no")
    assert s["horizon"]["phase1"] == 2 and s["horizon"]["copy"] == 4  # the tiny preset predicts 2 frames
    before = stamps(out / "predictions", "*.npz")
    assert len(before) == 2
    assert main(argv) == 0
    assert stamps(out / "predictions", "*.npz") == before  # cached


@pytest.mark.parametrize("extra, message", [
    (["--ckpt", "nowhere"], "no such run folder"),
    (["--untrained"], "--untrained needs a --ckpt"),
    (["--probes", "0"], "--probes must be >= 1"),
])
def test_bad_input_exits_with_code_2(tmp_path, capsys, extra, message):
    assert main(["experiment", "capabilities", "--out", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_stack_topple_probe_shows_the_top_cube_falling_in_the_robot_scene():
    from envs.robot_probes import stack_topple

    probe = stack_topple(3, frames=5, image_size=32)
    z = np.array(probe.meta["positions"])[:, 2]
    assert z[0] > 0.055 and z[-1] < 0.03  # on the bottom cube, then on the table
    assert probe.frames.shape == (5, 32, 32, 3) and probe.masks.shape == (5, 32, 32)
    assert (probe.masks[0] & probe.masks[-1]).sum() < probe.masks[0].sum()  # it left (part of) where it was
    assert all(m.sum() >= 3 for m in probe.masks)
    np.testing.assert_array_equal(stack_topple(3, frames=5, image_size=32).frames, probe.frames)
