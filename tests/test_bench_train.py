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
