"""The demo-count sweep end to end on tiny settings, and its resume."""

from __future__ import annotations

import json

import pytest

from gr2_sim.cli import main


def sweep_args(out):
    return ["sweep", "--env", "GR2Sim/Reach-v0", "--demos", "2", "4", "--pretrain", "both", "--out", str(out),
            "--steps", "2", "--pretrain-steps", "2", "2", "--clips", "3", "--robot-episodes", "3",
            "--episodes", "2", "--videos", "0", "--preset", "tiny", "--batch-size", "2", "--workers", "1",
            "--seeds", "1", "--baselines", "none", "--jobs", "1"]


def test_sweep_writes_table_plot_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(out)) == 0
    results = json.loads((out / "results.json").read_text())
    cells = {(r["variant"], r["demos"]) for r in results["rows"]}
    assert cells == {("scratch", 2), ("scratch", 4), ("pretrained", 2), ("pretrained", 4)}
    assert all(0.0 <= r["success_rate"] <= 1.0 and len(r["success_ci95"]) == 2 for r in results["rows"])
    assert (out / "success_vs_demos.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "| demos | variant |" in table
    pre = {c["demos"]: c for c in results["pooled"] if c["variant"] == "pretrained"}
    scratch = {c["demos"]: c for c in results["pooled"] if c["variant"] == "scratch"}
    assert [(g["demos"], g["step"]) for g in results["gains"]] == [(2, "pre-training"), (4, "pre-training")]
    for g in results["gains"]:  # pre-trained minus scratch at each demo count, with its interval
        assert g["difference"] == pytest.approx(pre[g["demos"]]["success_rate"] - scratch[g["demos"]]["success_rate"])
        assert g["ci95"][0] <= g["difference"] <= g["ci95"][1]
    assert "| 4 | pre-training (pretrained minus scratch) |" in table
    for r in results["rows"]:  # each cell's goal distance, start -> end, in the table
        goal = r["goal_distance"]
        assert goal["episodes"] == r["episodes"] and goal["start_mean"] > 0
        assert f"| {100 * goal['start_mean']:.1f} -> {100 * goal['end_mean']:.1f} |" in table
    seconds = results["seconds"]  # every stage timed: the lesson's compute cost
    assert seconds["baselines"] is None  # --baselines none
    parts = ("data", "phase1", "phase2", "phase3", "eval")
    assert all(seconds[k] > 0 for k in parts)
    assert abs(seconds["total"] - sum(seconds[k] for k in parts)) < 0.5
    assert "Compute time: " in table and "so far" not in table  # every cell done

    # a rerun skips every finished piece: nothing is retrained or re-evaluated
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("eval.json")}
    stamps.update({p: p.stat().st_mtime_ns for p in out.rglob("trainer_state.pt")})
    assert main(sweep_args(out)) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_sweep_labelled_video_column(tmp_path, capsys):
    """--labelled-video: an IDM per demo count labels phase 2's robot video; the labelled runs start from phase 2
    and train on the demos and the labels; the gain over pretrained is in the table; --pretrain no is refused."""
    from gr2_sim.data import load_episodes

    out = tmp_path / "sweep"
    argv = sweep_args(out)
    argv[argv.index("--demos") + 1:argv.index("--pretrain") + 2] = ["2", "--pretrain", "yes"]
    assert main([*argv, "--labelled-video", "--idm-steps", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["variant"] for r in results["rows"]} == {"pretrained", "labelled"}
    run = json.loads((out / "runs" / "labelled_N2_s0" / "config.json").read_text())["train"]
    labels = out / "runs" / "idm_N2" / "labelled.hdf5"
    assert run["init"] == str(out / "runs" / "phase2") and run["extra_data"] == [str(labels)]
    idm = json.loads((out / "runs" / "idm_N2" / "config.json").read_text())
    assert idm["train"]["demos"] == 2 and idm["model"]["next_state"] is True
    video, labelled = load_episodes(out / "data" / "robot_video.hdf5", split="all"), load_episodes(labels, split="all")
    assert labelled.num_episodes == video.num_episodes == 3 and labelled.actions.shape == (len(video.rewards), 7)
    assert [(g["demos"], g["step"]) for g in results["gains"]] == [(2, "labelled video")]
    assert "| 2 | labelled video (labelled minus pretrained) |" in (out / "results.md").read_text()
    assert results["seconds"]["labels"] > 0
    # resumed: the IDM and its labels are reused, not remade
    stamp = labels.stat().st_mtime_ns
    assert main([*argv, "--labelled-video", "--idm-steps", "2"]) == 0
    assert labels.stat().st_mtime_ns == stamp
    # side by side (--jobs 2): the IDMs in the pool first, each labelled cell after its demo count's labels
    two = sweep_args(tmp_path / "two")
    two[two.index("--demos") + 1:two.index("--pretrain") + 2] = ["2", "4", "--pretrain", "yes"]
    two[two.index("--jobs") + 1] = "2"
    assert main([*two, "--labelled-video", "--idm-steps", "2"]) == 0
    rows = json.loads((tmp_path / "two" / "results.json").read_text())["rows"]
    assert sorted((r["variant"], r["demos"]) for r in rows) == [
        ("labelled", 2), ("labelled", 4), ("pretrained", 2), ("pretrained", 4)]
    assert "labels done: N=4" in capsys.readouterr().out
    no = sweep_args(tmp_path / "no")
    no[no.index("--pretrain") + 1] = "no"
    assert main([*no, "--labelled-video"]) == 2
    assert "--pretrain both or yes" in capsys.readouterr().err


def test_sweep_resumes_after_a_missing_cell(tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(out)) == 0
    victim = out / "runs" / "scratch_N4_s0" / "eval" / "eval.json"
    victim.unlink()  # as if the sweep had been killed during that evaluation
    before = (out / "runs" / "phase1" / "trainer_state.pt").stat().st_mtime_ns
    assert main(sweep_args(out)) == 0
    assert victim.exists()
    assert (out / "runs" / "phase1" / "trainer_state.pt").stat().st_mtime_ns == before


def test_every_run_of_a_sweep_has_the_pinned_model(tmp_path, monkeypatch, capsys):
    from gr2_sim import config

    out = tmp_path / "sweep"
    args = [a for a in sweep_args(out) if a != "4"] + ["--set", "keypoints=2"]  # one demo count, 2
    assert main(args) == 0
    pinned = json.loads((out / "model.json").read_text())
    assert pinned["keypoints"] == 2 and pinned["d_model"] == config.PRESETS["tiny"]["d_model"]

    # gr2-sim's preset changes between two sessions; the resumed sweep keeps the model it started with
    # (and gains a field the pinned model.json predates: it keeps the behaviour the sweep started with)
    monkeypatch.setitem(config.PRESETS, "tiny", {**config.PRESETS["tiny"], "d_model": 48, "video_head": "conv"})
    older = {k: v for k, v in pinned.items() if k != "video_head"}
    (out / "model.json").write_text(json.dumps(older))
    (out / "runs" / "scratch_N2_s0" / "eval" / "eval.json").unlink()
    for name in ("trainer_state.pt", "model.safetensors"):
        (out / "runs" / "scratch_N2_s0" / name).unlink()
    (out / "runs" / "scratch_N2_s0" / "config.json").unlink()
    assert main(args) == 0
    for run in ("phase1", "scratch_N2_s0", "pretrained_N2_s0"):
        model = json.loads((out / "runs" / run / "config.json").read_text())["model"]
        assert (model["d_model"], model["keypoints"], model["video_head"]) == (pinned["d_model"], 2, "linear"), run

    assert main([*args[:-1], "keypoints=3"]) == 2  # a different model in a started sweep: a clear error
    assert "keypoints=2 there, 3 asked" in capsys.readouterr().err


def test_quickstart_end_to_end_on_tiny_settings(tmp_path):
    out = tmp_path / "qs"
    argv = ["quickstart", "--out", str(out), "--env", "GR2Sim/Reach-v0", "--demos", "3", "--steps", "2",
            "--pretrain-steps", "2", "2", "--clips", "3", "--robot-episodes", "3", "--episodes", "1",
            "--preset", "tiny", "--workers", "1"]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    assert "| demos | variant |" in report and "success_vs_demos.png" in report
    assert (out / "losses.png").exists() and (out / "success_vs_demos.png").exists()
    assert any((out / "videos").iterdir())
    assert (out / "rollout.gif").stat().st_size > 1000 and "rollout.gif" in report  # the imagined future
    imagined = json.loads((out / "imagined" / "eval.json").read_text())
    assert imagined["config"]["policy"]["mode"] == "denoise"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["variant"] for r in rows} >= {"scratch", "pretrained", "bc"}
    assert main(argv) == 0  # a rerun finds everything done


def test_sweep_collects_and_evaluates_with_env_kwargs(tmp_path, capsys):
    out = tmp_path / "obj"
    argv = sweep_args(out)
    argv[argv.index("--demos") + 1:argv.index("--pretrain") + 2] = ["2", "--pretrain", "no"]
    assert main(argv + ["--env-kwargs", '{"object_state": true}']) == 0  # evaluation needs the 14-D state too
    from gr2_sim.data import load_episodes

    assert load_episodes(out / "data" / "demos.hdf5", load_images=False).states.shape[1] == 14
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    report = json.loads((out / "runs" / "scratch_N2_s0" / "eval" / "eval.json").read_text())
    assert row["episodes"] == 2 and report["config"]["env_kwargs"] == {"object_state": True}

    assert main(sweep_args(tmp_path / "bad") + ["--env-kwargs", "{object_state: true}"]) == 2
    assert "--env-kwargs" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_sweep_with_both_baselines_and_two_seeds(tmp_path, capsys):
    out = tmp_path / "base"
    argv = sweep_args(out)
    argv[argv.index("--demos") + 1:argv.index("--pretrain") + 2] = ["2", "--pretrain", "no"]
    argv = argv[:argv.index("--seeds")] + ["--seeds", "2", "--baselines", "bc,no-video", "--mode", "denoise",
                                           "--jobs", "2"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert {(r["variant"], r["seed"]) for r in results["rows"]} == {
        (v, s) for v in ("scratch", "bc", "no-video") for s in (0, 1)}
    # the same training FLOPs for every cell: the image BC, cheaper per sample, trains more steps
    bc_steps = results["steps_per_variant"]["bc"]
    dit_flops, bc_flops = _train_flops(out / "runs" / "scratch_N2_s0"), _train_flops(out / "runs" / "bc_N2_s0")
    assert results["budget"] == "flops" and bc_steps == round(2 * dit_flops / bc_flops)
    for r in results["rows"]:  # the baselines are read out with the head
        assert r["train_steps"] == (bc_steps if r["variant"] == "bc" else 2) and r["train_wall_s"] >= 0
        assert r["mode"] == ("denoise" if r["variant"] == "scratch" else "head")
    assert results["seconds"]["baselines"] > 0
    runs = out / "runs"
    assert json.loads((runs / "bc_N2_s1" / "config.json").read_text())["kind"] == "bc"
    assert json.loads((runs / "no-video_N2_s0" / "config.json").read_text())["train"]["video_weight"] == 0.0
    cells = {c["variant"]: c for c in results["pooled"]}
    assert set(cells) == {"scratch", "bc", "no-video"}
    for c in cells.values():  # two seeds of 2 episodes, pooled
        assert c["seeds"] == [0, 1] and c["episodes"] == 4 and len(c["per_seed_success"]) == 2
    diffs = {d["variant"]: d for d in results["minus_bc"]}
    assert set(diffs) == {"scratch", "no-video"}  # every DiT column against bc
    for v, d in diffs.items():
        assert d["difference"] == pytest.approx(cells[v]["success_rate"] - cells["bc"]["success_rate"])
        assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]
    gains = {g["step"]: g for g in results["gains"]}  # no pretrained column: only video prediction's step
    assert set(gains) == {"video prediction"} and gains["video prediction"]["minus"] == "no-video"
    assert gains["video prediction"]["difference"] == pytest.approx(
        cells["scratch"]["success_rate"] - cells["no-video"]["success_rate"])
    table = (out / "results.md").read_text()
    assert "train wall (s)" in table and "minus bc" in table and "| 2 | no-video | 2 |" in table
    assert "| 2 | video prediction (scratch minus no-video) |" in table
    assert f"{bc_steps} steps of the same batch for bc" in table and "2 runs side by side" in table
    assert (out / "success_vs_demos.png").exists()

    assert main([*argv[:-2], "--baselines", "bc,dreamer"]) == 2
    err = capsys.readouterr().err
    assert "unknown name(s) dreamer" in err and "known: bc, no-video" in err


def _train_flops(run) -> int:
    """Training FLOPs per sample of a run's model, from its saved config."""
    from gr2_sim.checkpoint import load_config
    from gr2_sim.config import ModelConfig
    from gr2_sim.model import VideoActionDiT
    from policies.bc import BCConfig, BCModel

    config = load_config(run)
    if config["kind"] == "bc":
        return BCModel(BCConfig.from_dict(config["model"])).estimate_flops()["train_step"]
    return VideoActionDiT(ModelConfig.from_dict(config["model"])).estimate_flops()["train_step"]


def test_sweep_budget_and_jobs_errors(tmp_path, capsys):
    assert main(sweep_args(tmp_path / "j") + ["--jobs", "-1"]) == 2
    assert "--jobs" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the choices are listed
        main(sweep_args(tmp_path / "b") + ["--budget", "minutes"])
    assert "choose from 'flops', 'steps'" in capsys.readouterr().err


def test_flops_budget_gives_the_image_bc_the_dits_training_flops(demo_file):
    """The small DiT costs about 15x the image BC per sample: at equal FLOPs the BC trains that many more steps."""
    import argparse

    from gr2_sim.config import make_config
    from gr2_sim.sweep import budget_steps

    model = {k: v for k, v in make_config("small").to_dict().items()
             if k not in ("img_size", "action_dim", "state_dim")}
    args = argparse.Namespace(steps=1000, budget="flops", model=model, video_batch=0, batch_size=32)
    steps = budget_steps(args, demo_file)
    assert steps["scratch"] == steps["pretrained"] == steps["no-video"] == 1000
    assert 10_000 < steps["bc"] < 20_000
    assert budget_steps(argparse.Namespace(steps=1000, budget="steps", model=model, video_batch=0, batch_size=32),
                        demo_file)["bc"] == 1000


def test_flops_budget_counts_the_video_batch_of_a_keypoint_readout(demo_file, tmp_path, capsys):
    """With --video-batch V of B, V samples go through the transformer and all B through the keypoint readout:
    the DiT's FLOPs per sample, so the BC's steps at equal FLOPs, fall between the readout's and the full DiT's."""
    import argparse

    from gr2_sim.config import make_config
    from gr2_sim.model import VideoActionDiT
    from gr2_sim.sweep import budget_steps, dit_train_flops

    model = {k: v for k, v in make_config("small", action_from_dit=False, keypoint_layout="bc").to_dict().items()
             if k not in ("img_size", "action_dim", "state_dim")}
    dit = VideoActionDiT(make_config("small", action_from_dit=False, keypoint_layout="bc"))
    flops = dit.estimate_flops()
    assert 0 < flops["actions"] < flops["forward"] / 4
    assert "actions" not in VideoActionDiT(make_config("small", action_from_dit=True)).estimate_flops()  # reads the DiT
    assert dit_train_flops(dit, 0, 32) == flops["train_step"]
    assert dit_train_flops(dit, 8, 32) == (8 * flops["train_step"] + 32 * 3 * flops["actions"]) / 32
    assert 3 * flops["actions"] < dit_train_flops(dit, 8, 32) < flops["train_step"]
    full, part = (budget_steps(argparse.Namespace(steps=1000, budget="flops", model=model, video_batch=v,
                                                  batch_size=32), demo_file)["bc"] for v in (0, 8))
    assert part < full / 2
    # the flag needs such a model
    assert main(sweep_args(tmp_path / "v") + ["--video-batch", "8"]) == 2
    err = capsys.readouterr().err
    assert "--video-batch 8" in err and "action_from_dit=false" in err
    out = tmp_path / "kp"
    # left out: a quarter of the batch for such a model (batch 2 here: one sample)
    assert main(sweep_args(out) + ["--pretrain", "no", "--set", "action_from_dit=false"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["video_batch"] == 1 and len(results["rows"]) == 2
    assert "the video loss on 1 samples of each" in (out / "results.md").read_text()
