"""gr2-sim bench train: one row per model, ours under torch.compile on request."""

from __future__ import annotations

import torch

from gr2_sim.bench_train import bench_train


def test_bench_train_rows_and_the_compiled_variant(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)  # no C++ build here
    rows = bench_train(["tiny"], batch_size=2, steps=3, compile=True, baselines=False)
    assert [r["model"] for r in rows] == ["gr2-sim", "gr2-sim, torch.compile", "lesson reference"]
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "VideoActionDiT"
    for r in rows:
        assert r["samples_per_s"] > 0 and 0 < r["MFU"] < 1.5 and r["tokens"] == 48
    rows = bench_train(["tiny"], batch_size=2, steps=3)
    assert [r["model"] for r in rows] == ["gr2-sim", "lesson reference", "image BC (--stage bc)"]
    assert list(rows[-1]) == list(rows[0])  # one table: the same columns
    assert rows[-1]["samples_per_s"] > 0 and 0 < rows[-1]["MFU"] < 1.5 and rows[-1]["GFLOP_per_sample"] > 0


def test_bench_threads_measures_each_cell_with_and_without_a_busy_neighbor():
    from gr2_sim.bench_train import bench_threads

    rows = bench_threads("tiny", batch_size=2, seconds=0.1, threads=(1,), policies=("unset",))
    assert [(r["neighbor"], r["threads"]) for r in rows] == [("none", "1"), ("1-thread busy loop", "1")]
    assert all(r["steps_per_s"] > 0 for r in rows)


def test_bench_latency_times_the_head_and_denoise_queries_on_one_thread():
    from gr2_sim.bench import bench_latency

    threads = torch.get_num_threads()
    rows = bench_latency(["tiny"], queries=5)
    assert [(r["preset"], r["readout"], r["threads"]) for r in rows] == [("tiny", "head", 1), ("tiny", "denoise", 1)]
    assert rows[0]["queries"] == 5 and rows[1]["queries"] == 5  # denoise: a fifth as many, at least 5
    assert all(0 < r["median_ms"] <= r["p95_ms"] for r in rows)
    assert torch.get_num_threads() == threads


def test_the_reference_flop_config_builds_for_every_preset():
    """The lesson reference's FLOPs are counted on a config without keypoints: the presets whose video head and
    action head read the keypoint trunk (small, base) must fall back to the lesson's pathway there."""
    from gr2_sim.bench_train import reference_flop_config
    from gr2_sim.config import PRESETS, make_config
    from gr2_sim.model import VideoActionDiT

    for preset in PRESETS:
        ref = reference_flop_config(make_config(preset, state_dim=8))
        assert ref.keypoints == 0 and ref.video_head == "linear" and ref.action_from_dit
        assert VideoActionDiT(ref).estimate_flops()["train_step"] > 0
