"""`gr2-sim experiment NAME`: every experiment end to end on tiny sizes, its resume, and the statistics it uses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gr2_sim.cli import main
from gr2_sim.experiments import common
from gr2_sim.experiments.loss_correlation import schedule
from gr2_sim.experiments.transfer import demos_to_reach, sample_efficiency

TINY = ["--preset", "tiny", "--batch-size", "4", "--workers", "1"]
MACHINE_KEYS = {"platform", "cpu_count", "torch"}


def summary(out):
    s = json.loads((out / "summary.json").read_text())
    assert s["command"].startswith(f"gr2-sim experiment {s['experiment']} --out {out}")
    assert s["wall_time_s"] > 0 and MACHINE_KEYS <= set(s["machine"])
    for name in s["figures"]:
        assert (out / name).stat().st_size > 1000
    return s


def stamps(out, *patterns):
    return {p: p.stat().st_mtime_ns for pattern in patterns for p in out.rglob(pattern)}


def test_loss_correlation_end_to_end_and_resume(demo_file, tmp_path, one_torch_thread):
    out = tmp_path / "lc"
    argv = ["experiment", "loss-correlation", "--out", str(out), "--data", str(demo_file), "--demos", "6",
            "--steps", "9", "--checkpoints", "3", "--val-per-checkpoint", "1", "--episodes", "1", *TINY]
    assert main(argv) == 0
    s = summary(out)
    assert [c["step"] for c in s["checkpoints"]] == [3, 6, 9]
    for c in s["checkpoints"]:
        assert 0 <= c["success_rate"] <= 1 and c["val_video_mse"] > 0 and c["val_action_mse"] > 0
    corr = s["correlations"]
    assert corr["held_out_curves"]["val_video_mse_vs_val_action_mse"]["n"] == 3
    r = corr["training_curves"]["video_loss_vs_action_loss"]
    assert r["n"] == 3 and all(v is None or -1 <= v <= 1 for v in (r["pearson"], r["spearman"]))
    assert set(corr["across_checkpoints"]) == {"val_video_mse_vs_val_action_mse", "val_video_mse_vs_success_rate",
                                               "val_action_mse_vs_success_rate"}
    vv = corr["across_checkpoints"]["val_video_mse_vs_val_action_mse"]
    assert vv["pearson_p"] is None or 0 < vv["pearson_p"] <= 1  # 3 checkpoints: exact over 6 orders
    # the kept checkpoint of the last step holds the run's final EMA weights
    from gr2_sim import checkpoint as ckpt

    last, final = ckpt.load_weights(out / "runs" / "phase3" / "checkpoints" / "step_000009"), ckpt.load_weights(out / "runs" / "phase3")
    assert all(np.array_equal(last[k].numpy(), final[k].numpy()) for k in final)
    before = stamps(out, "eval.json", "trainer_state.pt")
    assert main(argv) == 0  # finished pieces are skipped
    assert stamps(out, "eval.json", "trainer_state.pt") == before


def test_transfer_end_to_end(tmp_path, one_torch_thread):
    out = tmp_path / "transfer"
    argv = ["experiment", "transfer", "--out", str(out), "--env", "GR2Sim/Reach-v0", "--demos", "2", "4",
            "--steps", "2", "--pretrain-steps", "2", "2", "--clips", "3", "--robot-episodes", "3", "--episodes", "1",
            *TINY]
    assert main(argv) == 0
    s = summary(out)
    assert {(c["variant"], c["demos"]) for c in s["cells"]} == {(v, n) for v in ("scratch", "pretrained")
                                                                for n in (2, 4)}
    assert all(c["success_ci95"][0] <= c["success_rate"] <= c["success_ci95"][1] for c in s["cells"])
    assert [d["demos"] for d in s["pretrained_minus_scratch"]] == [2, 4]
    assert all(-1 <= d["ci95"][0] <= d["difference"] <= d["ci95"][1] <= 1 for d in s["pretrained_minus_scratch"])
    assert s["sample_efficiency"]["status"] in ("reached", "not reached", "no gain measurable")
    assert (out / "sweep" / "results.json").exists()


def test_attention_end_to_end(demo_file, video_file, tmp_path, one_torch_thread):
    out = tmp_path / "att"
    argv = ["experiment", "attention", "--out", str(out), "--data", str(demo_file), "--synth-data", str(video_file),
            "--demos", "6", "--steps", "2", "--pretrain-steps", "2", "--windows", "4", "--noise-levels", "0.5", "1.0",
            *TINY]
    assert main(argv) == 0
    s = summary(out)
    assert set(s["models"]) == {"pretrained", "scratch"}
    assert s["models"]["pretrained"]["init"] is not None and s["models"]["scratch"]["init"] is None
    for model in s["models"].values():
        assert len(model["levels"]) == 2
        level = model["levels"][0]
        within = np.array(level["within_frame"])  # (layers, heads)
        assert within.shape == (model["layers"], model["heads"]) and np.all((within >= 0) & (within <= 1))
        assert level["uniform_within_frame"] == pytest.approx(1 / level["frames"])
        readout = np.array(level["readout_frames"])  # (layers, T, F): each query frame's mass sums to 1
        assert np.allclose(readout.sum(-1), 1, atol=1e-4)


def test_head_vs_idm_end_to_end(demo_file, tmp_path, one_torch_thread):
    out = tmp_path / "hvi"
    argv = ["experiment", "head-vs-idm", "--out", str(out), "--data", str(demo_file), "--demos", "6",
            "--steps", "2", "--idm-steps", "2", "--windows", "6", "--ddim-steps", "2", "--episodes", "1", *TINY]
    assert main(argv) == 0
    s = summary(out)
    assert set(s["action_mse"]) == {"head", "denoise", "idm_generated", "idm_real", "generated_frames_mse"}
    for name in ("head", "denoise", "idm_generated", "idm_real"):
        e = s["action_mse"][name]
        assert e["n"] == 6 and e["mean"] >= 0 and e["ci95"][0] <= e["mean"] <= e["ci95"][1] and len(e["per_step"]) == 2
    assert set(s["rollouts"]) == {"head", "denoise", "idm"}
    assert all(r["episodes"] == 1 and r["query_latency_ms"]["median"] > 0 for r in s["rollouts"].values())
    before = stamps(out, "eval.json", "offline.json")
    assert main(argv) == 0
    assert stamps(out, "eval.json", "offline.json") == before


def test_physics_probes_end_to_end(demo_file, video_file, tmp_path, one_torch_thread):
    out = tmp_path / "pp"
    argv = ["experiment", "physics-probes", "--out", str(out), "--data", str(demo_file), "--synth-data",
            str(video_file), "--demos", "6", "--pretrain-steps", "2", "--robot-steps", "2", "--probes", "2",
            "--frames", "6", "--ddim-steps", "2", *TINY]
    assert main(argv) == 0
    s = summary(out)
    assert set(s["per_kind"]) == {"occlusion", "unsupported", "wall_bounce"}
    for models in s["per_kind"].values():
        for model in ("phase1", "robot_only", "untrained", "copy"):
            m = models[model]["mask_mse"]
            assert m["n"] == 2 and 0 <= m["mean"] <= 1
        assert "phase1_minus_robot_only_mask_mse" in models
    assert "hidden_mask_mse" in s["per_kind"]["occlusion"]["phase1"]
    before = stamps(out, "*.npz", "trainer_state.pt")
    assert main(argv) == 0
    assert stamps(out, "*.npz", "trainer_state.pt") == before
    assert json.loads((out / "summary.json").read_text())["per_kind"] == s["per_kind"]


def test_bad_input_exits_with_code_2(tmp_path, capsys):
    assert main(["experiment", "loss-correlation", "--out", str(tmp_path), "--checkpoints", "0"]) == 2
    assert "--checkpoints must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "no-such-experiment", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_rank_correlation_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert common.spearman(list(x), list(y)) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert common.pearson(list(x), list(y)) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert common.pearson([1, 1, 1], [1, 2, 3]) is None and common.spearman([1, 2], [2, 1]) is None


def test_permutation_p_values():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    c = common.correlations(x, [0.1, 0.2, 0.25, 0.4, 0.5, 0.9], p_values=True)
    assert c["spearman"] == pytest.approx(1.0)
    assert c["spearman_p"] == pytest.approx(2 / 720)  # exact: only the order itself and its reverse reach |rho| = 1
    assert common.correlations(x, [3.0, 1.0, 4.0, 1.5, 5.0, 2.0], p_values=True)["spearman_p"] > 0.2
    assert common.correlations(x, [1.0] * 6, p_values=True)["pearson_p"] is None  # constant: undefined
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a = rng.normal(size=40)
    b = 0.5 * a + rng.normal(size=40)  # sampled, n > 8: close to the t-test's p-value
    assert common.permutation_p(list(a), list(b), common.pearson, resamples=4000) == pytest.approx(
        stats.pearsonr(a, b).pvalue, abs=0.01)


def test_sample_efficiency_interpolates_on_log_demos():
    assert demos_to_reach([(50, 0.1), (200, 0.5)], 0.3) == pytest.approx(100.0)  # halfway in log space
    assert demos_to_reach([(50, 0.6), (200, 0.8)], 0.3) == 50.0
    assert demos_to_reach([(50, 0.1), (200, 0.2)], 0.3) is None
    cells = [{"variant": "scratch", "demos": 50, "success_rate": 0.1},
             {"variant": "scratch", "demos": 200, "success_rate": 0.5},
             {"variant": "pretrained", "demos": 50, "success_rate": 0.3}]
    cells.append({"variant": "pretrained", "demos": 200, "success_rate": 0.0})
    result = sample_efficiency(cells)
    assert result["status"] == "reached" and result["gain"] == pytest.approx(2.0)
    assert result["smallest_demos"] == 50 and result["pretrained_success_at_smallest"] == 0.3
    assert [r["demos"] for r in result["per_demos"]] == [50, 200]
    assert result["per_demos"][1]["status"] == "no gain measurable"
    cells[2]["success_rate"] = 0.9
    result = sample_efficiency(cells)
    assert result["status"] == "not reached" and result["gain_at_least"] == pytest.approx(4.0)


def test_schedule_puts_held_out_losses_on_every_checkpoint():
    for steps, checkpoints, per in [(3000, 6, 5), (1000, 7, 5), (9, 3, 1), (10, 20, 5)]:
        ckpt_every, eval_every = schedule(steps, checkpoints, per)
        assert ckpt_every % eval_every == 0 and eval_every >= 1


def test_summary_json_has_no_nan(tmp_path):
    assert common.jsonable({"a": math.nan, "b": [np.float32(1.5), math.inf]}) == {"a": None, "b": [1.5, None]}


def tiny_action_run(data, out, steps: int = 3):
    """A tiny phase-3 run on ``data`` for the experiments that probe a trained model."""
    from gr2_sim.train import TrainConfig, train

    return train(TrainConfig(stage="action", data=str(data), out=str(out), steps=steps, preset="tiny",
                             batch_size=4, progress=False, eval_every=steps, ckpt_every=steps))


def test_inputs_probe_reports_each_shuffled_input(demo_file, tmp_path, one_torch_thread):
    run = tiny_action_run(demo_file, tmp_path / "run")
    out = tmp_path / "inputs"
    assert main(["experiment", "inputs", "--out", str(out), "--run", str(run), "--data", str(demo_file),
                 "--windows", "16"]) == 0
    s = summary(out)
    (r,) = s["results"]
    assert 0 < r["windows"] <= 16 and r["t"] == 99 and set(r["shuffled"]) == {"image", "instruction", "state"}
    for parts in r["shuffled"].values():
        assert set(parts) == {"translation", "rotation", "gripper"}
        for part, v in parts.items():  # the increase is the shuffled error minus the recorded one
            assert v["increase"]["mean"] == pytest.approx(v["mse"] - r["as_recorded"][part], abs=1e-5)
    assert len(r["xy_correlation"]) == 2
    # --first-steps keeps only windows that start early in their episode
    from gr2_sim.data import load_episodes

    assert main(["experiment", "inputs", "--out", str(out), "--run", str(run), "--data", str(demo_file),
                 "--windows", "1000", "--first-steps", "1"]) == 0
    (early,) = summary(out)["results"]
    assert early["first_steps"] == 1  # one window per held-out episode: the one at its first step
    assert early["windows"] == load_episodes(demo_file, split="valid", load_images=False).num_episodes
    assert main(["experiment", "inputs", "--out", str(out), "--run", str(run), "--data", str(demo_file),
                 "--noise", "1.5"]) == 2


def test_palette_measures_how_far_each_color_stands_out(tmp_path, capsys):
    import gymnasium as gym

    import envs  # noqa: F401
    from gr2_sim.experiments.palette import contrast

    assert main(["experiment", "palette", "--out", str(tmp_path / "p"), "--scenes", "2"]) == 0
    colors = json.loads((tmp_path / "p" / "summary.json").read_text())["colors"]
    assert set(colors) == {"red", "green", "blue", "yellow", "purple", "orange"}
    assert all(v["pixels"] > 5 and v["scenes"] == 2 for v in colors.values())
    # blue is the palette color farthest from the brown table, in RGB and in hue
    assert max(colors, key=lambda c: colors[c]["rgb_distance"]) == "blue"
    assert max(colors, key=lambda c: colors[c]["hue_gap"]) == "blue"
    env = gym.make("GR2Sim/Reach-v0", render_mode="rgb_array", render_size=64)
    env.reset(seed=1_000_000)
    before = env.unwrapped.model.geom_rgba.copy()
    got = contrast(env, "cube0", {"table-like": (0.55, 0.45, 0.35, 1.0), "blue": (0.15, 0.30, 0.95, 1.0)})
    np.testing.assert_array_equal(env.unwrapped.model.geom_rgba, before)  # the scene is left as it was
    env.close()
    assert got["table-like"]["rgb_distance"] < got["blue"]["rgb_distance"] / 2
    assert main(["experiment", "palette", "--out", str(tmp_path / "q"), "--geom", "nope"]) == 2
    assert "--geom 'nope'" in capsys.readouterr().err


def test_changed_pixel_mse_on_a_constructed_clip():
    """A square moves one step right: copy is wrong exactly on the pixels it left and entered, the true future
    is right everywhere, and a prediction right on half the changed pixels halves copy's error."""
    import torch

    from gr2_sim.experiments.video_quality import changed_mse, ratio_ci

    cond = -torch.ones(1, 3, 16, 16)
    cond[..., 4:8, 4:8] = 1.0
    future = -torch.ones(1, 1, 3, 16, 16)
    future[..., 4:8, 6:10] = 1.0  # moved 2 px right: columns 4-5 emptied, 8-9 filled
    copy = cond.unsqueeze(1)
    sse, n = changed_mse(copy, future, cond, threshold=0.1)
    assert n[0] == 16 and sse[0] == pytest.approx(16 * 4.0)  # every changed pixel off by 2 in each channel
    sse_true, _ = changed_mse(future, future, cond, threshold=0.1)
    assert sse_true[0] == 0
    half = copy.clone()
    half[..., 4:8, 8:10] = 1.0  # fills the new place, leaves the old one
    sse_half, _ = changed_mse(half, future, cond, threshold=0.1)
    assert sse_half[0] == pytest.approx(sse[0] / 2)
    r = ratio_ci(np.array([1.0, 2.0]), np.array([2.0, 4.0]), seed=0)
    assert r["ratio"] == pytest.approx(0.5) and r["ci95"] == [pytest.approx(0.5), pytest.approx(0.5)]


def test_a_prediction_beats_copy_only_if_the_whole_frame_is_not_worse():
    """A scrambled frame can halve copy's error over the changed pixels and still be worse over the frame."""
    from gr2_sim.experiments.video_quality import against_copy

    changed_copy, whole_copy = np.full(20, 4.0), np.full(20, 0.01)
    good = against_copy(np.full(20, 1.0), changed_copy, np.full(20, 0.005), whole_copy, seed=0)
    assert good["beats_copy"] and good["meets_bar"] and good["ratio_to_copy"]["ratio"] == pytest.approx(0.25)
    scrambled = against_copy(np.full(20, 2.0), changed_copy, np.full(20, 0.02), whole_copy, seed=0)
    assert scrambled["ratio_to_copy"]["ratio"] == pytest.approx(0.5) and not scrambled["beats_copy"]
    assert scrambled["full_frame_ratio_to_copy"]["ratio"] == pytest.approx(2.0) and not scrambled["meets_bar"]
    modest = against_copy(np.full(20, 3.2), changed_copy, np.full(20, 0.009), whole_copy, seed=0)
    assert modest["beats_copy"] and not modest["meets_bar"]  # 0.8 of copy: better, but not 30% better


def test_video_quality_end_to_end(demo_file, tmp_path, one_torch_thread):
    from gr2_sim.train import TrainConfig, train

    run = train(TrainConfig(stage="action", data=str(demo_file), out=str(tmp_path / "run"), steps=2, preset="tiny",
                            batch_size=4, progress=False, eval_every=2, ckpt_every=2))
    out = tmp_path / "vq"
    assert main(["experiment", "video-quality", "--out", str(out), "--run", str(run), "--data", str(demo_file),
                 "--windows", "8", "--ddim-steps", "2"]) == 0
    (r,) = summary(out)["results"]
    assert r["windows"] == 8 and 0 < r["changed_pixel_fraction"] < 1
    copy = r["readouts"]["copy"]
    assert copy["changed_mse"] > 0 and "ratio_to_copy" not in copy
    for name in ("ddim", "one-step"):
        q = r["readouts"][name]["ratio_to_copy"]
        assert q["ratio"] > 0 and q["ci95"][0] <= q["ratio"] <= q["ci95"][1]
        w = r["readouts"][name]["full_frame_ratio_to_copy"]
        assert w["ratio"] > 0 and isinstance(r["readouts"][name]["beats_copy"], bool)
    assert main(["experiment", "video-quality", "--out", str(out), "--run", str(run), "--data", str(demo_file),
                 "--threshold", "3"]) == 2


def test_keypoint_probe_reads_positions_that_are_linear_and_not_noise():
    """The probe's regression on constructed features: positions that are a linear function of the features
    give R^2 ~ 1 and ~0 cm error; features unrelated to them give R^2 <= ~0; a constant coordinate has none."""
    from gr2_sim.experiments.keypoint_probe import ridge_probe

    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(400, 8)), rng.normal(size=(200, 8))
    w = rng.normal(size=(8, 6)) * 0.05
    y_train, y_test = x_train @ w, x_test @ w
    y_train[:, 2] = y_test[:, 2] = 0.02  # the cube's height on the table
    exact = ridge_probe(x_train, y_train, x_test, y_test, penalty=1e-6)
    assert exact["r2"]["object z"] is None
    assert all(v > 0.999 for k, v in exact["r2"].items() if v is not None)
    assert exact["object_xy_error_cm"]["median"] < 0.01
    noise = ridge_probe(rng.normal(size=(400, 8)), y_train, rng.normal(size=(200, 8)), y_test, penalty=1e-3)
    assert all(v < 0.1 for v in noise["r2"].values() if v is not None)
    assert noise["object_xy_error_cm"]["median"] > 10 * exact["object_xy_error_cm"]["median"]


def test_keypoint_probe_end_to_end(dataset_writer, tmp_path, one_torch_thread, capsys):
    data = dataset_writer(tmp_path / "os.hdf5", state_dim=7, env_kwargs={"object_state": True})
    run = tiny_action_run(data, tmp_path / "run", steps=2)
    out = tmp_path / "probe"
    assert main(["experiment", "keypoint-probe", "--out", str(out), "--run", str(run), "--data", str(data),
                 "--frames", "40"]) == 0
    s = summary(out)
    assert [r["name"] for r in s["results"]] == ["untrained", "run"]
    assert s["results"][1]["r2"]["object x"] is not None  # the square's y position, in the 2nd state value
    plain = dataset_writer(tmp_path / "plain.hdf5")
    assert main(["experiment", "keypoint-probe", "--out", str(out), "--run", str(run), "--data", str(plain)]) == 2
    assert "object_state" in capsys.readouterr().err
