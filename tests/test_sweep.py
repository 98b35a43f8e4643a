"""The demo-count sweep end to end on tiny settings, and its resume."""

from __future__ import annotations

import json

from gr2_sim.cli import main


def sweep_args(out):
    return ["sweep", "--env", "GR2Sim/Reach-v0", "--demos", "2", "4", "--pretrain", "both", "--out", str(out),
            "--steps", "2", "--pretrain-steps", "2", "2", "--clips", "3", "--robot-episodes", "3",
            "--episodes", "2", "--videos", "0", "--preset", "tiny", "--batch-size", "2", "--workers", "1"]


def test_sweep_writes_table_plot_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(out)) == 0
    results = json.loads((out / "results.json").read_text())
    cells = {(r["variant"], r["demos"]) for r in results["rows"]}
    assert cells == {("scratch", 2), ("scratch", 4), ("pretrained", 2), ("pretrained", 4)}
    assert all(0.0 <= r["success_rate"] <= 1.0 and len(r["success_ci95"]) == 2 for r in results["rows"])
    assert (out / "success_vs_demos.png").stat().st_size > 1000
    assert "| demos | variant |" in (out / "results.md").read_text()

    # a rerun skips every finished piece: nothing is retrained or re-evaluated
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("eval.json")}
    stamps.update({p: p.stat().st_mtime_ns for p in out.rglob("trainer_state.pt")})
    assert main(sweep_args(out)) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_sweep_resumes_after_a_missing_cell(tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(out)) == 0
    victim = out / "runs" / "scratch_N4_s0" / "eval" / "eval.json"
    victim.unlink()  # as if the sweep had been killed during that evaluation
    before = (out / "runs" / "phase1" / "trainer_state.pt").stat().st_mtime_ns
    assert main(sweep_args(out)) == 0
    assert victim.exists()
    assert (out / "runs" / "phase1" / "trainer_state.pt").stat().st_mtime_ns == before


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
    assert main(argv) == 0  # a rerun finds everything done
