"""Atomic writes: the whole new content or the old one, never a half file; normal file permissions."""

from __future__ import annotations

import os

import pytest

from gr2_sim.io import atomic_write_bytes, atomic_write_text


def test_new_file_gets_the_umask_mode_and_existing_file_keeps_its_own(tmp_path):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "sub" / "summary.json"
        atomic_write_text(path, "{}")
        assert path.read_text() == "{}"
        assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like open(path, "w")
        path.chmod(0o600)
        atomic_write_text(path, "[]")
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text() == "[]"
    finally:
        os.umask(umask)


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_bytes(path, b"old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
