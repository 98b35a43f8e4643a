"""Threads and devices: the automatic thread rule, --threads, and the CPU side of the CUDA helpers."""

from __future__ import annotations

import os

import pytest
import torch

import gr2_sim.device as device
from gr2_sim.cli import main
from gr2_sim.errors import UserError


@pytest.fixture
def no_omp_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("cores, busy, limit, expected", [
    (2, 0.0, None, 2),   # idle: every core
    (2, 1.0, None, 1),   # a one-thread job beside it: the free core only
    (2, 2.0, None, 1),   # all busy: still one thread
    (4, 1.4, None, 3),   # a core counts as busy from half its time
    (4, 1.6, None, 2),
    (8, 0.0, 3, 3),      # at most the limit
    (2, 9.0, None, 1),   # a load above the core count
])
def test_auto_threads_is_one_per_free_core(monkeypatch, no_omp_env, cores, busy, limit, expected):
    monkeypatch.setattr(device, "affinity_cores", lambda: cores)
    monkeypatch.setattr(device, "busy_cores", lambda: busy)
    threads, why = device.auto_threads(limit)
    assert threads == expected and why.startswith(f"auto: {round(min(busy, cores))} of {cores} cores busy")


def test_omp_num_threads_overrides_the_rule(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(device, "busy_cores", lambda: pytest.fail("OMP_NUM_THREADS set: nothing to measure"))
    assert device.auto_threads() == (3, "auto: OMP_NUM_THREADS=3")
    assert device.auto_threads(limit=2)[0] == 2


def test_busy_cores_is_a_share_of_the_machine():
    assert 0.0 <= device.busy_cores(0.05) <= (os.cpu_count() or 1) + 1e-6


@pytest.mark.parametrize("value, expected", [("auto", 0), ("0", 0), ("3", 3), (None, 0), (2, 2)])
def test_parse_threads(value, expected):
    assert device.parse_threads(value) == expected


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_threads_are_user_errors(value):
    with pytest.raises(UserError, match="--threads"):
        device.parse_threads(value)


def test_set_threads_says_how_many_and_why(capsys, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert device.set_threads(0) == 1 and torch.get_num_threads() == 1
        assert capsys.readouterr().out == "threads: 1 (auto: OMP_NUM_THREADS=1)\n"
        assert device.set_threads(2) == 2 and torch.get_num_threads() == 2
        assert capsys.readouterr().out == "threads: 2 (--threads)\n"
    finally:
        torch.set_num_threads(before)


def test_train_prints_and_uses_its_threads(demo_file, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["train", "--stage", "action", "--data", str(demo_file), "--out", str(tmp_path / "run"),
                     "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--threads", "1",
                     "--device", "cpu", "--no-progress"]) == 0
        assert "threads: 1 (--threads)" in capsys.readouterr().out and torch.get_num_threads() == 1
        assert main(["train", "--stage", "action", "--data", str(demo_file), "--out", str(tmp_path / "bad"),
                     "--threads", "-2"]) == 2
        assert "--threads must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_the_cli_asks_openmp_for_passive_waiting(monkeypatch):
    import gr2_sim.cli as cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's own choice stays
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cuda_helpers_do_nothing_on_cpu():
    x = torch.arange(6).reshape(2, 3)
    y = device.to_device(x, "cpu")
    assert y.device.type == "cpu" and torch.equal(x, y)
    with device.autocast(torch.device("cpu"), bf16=True):  # never bf16 on a CPU
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    device.synchronize(torch.device("cpu"))
