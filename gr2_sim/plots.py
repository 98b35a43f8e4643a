"""Figures from run folders (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def plot_losses(runs: list[Path], out: Path) -> Path:
    """Training video/action loss (solid) and held-out MSE (dots) of each run, one panel per run."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.2), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        records = read_metrics(run)
        train = [r for r in records if "video_loss" in r]
        val = [r for r in records if "val_video_mse" in r]
        ax.plot([r["step"] for r in train], [r["video_loss"] for r in train], label="video loss", color="C0")
        ax.plot([r["step"] for r in val], [r["val_video_mse"] for r in val], "o", color="C0", ms=3,
                label="held-out video")
        if any("action_loss" in r for r in train):
            ax2 = ax.twinx()
            ax2.plot([r["step"] for r in train], [r["action_loss"] for r in train], color="C3", label="action loss")
            ax2.set_ylabel("action loss (normalised)", color="C3")
            ax2.set_yscale("log")
        ax.set_yscale("log")
        ax.set_title(Path(run).name)
        ax.set_xlabel("step")
        ax.set_ylabel("video loss", color="C0")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_success_vs_demos(rows: list[dict], out: Path) -> Path:
    """Success rate (with its 95% interval) vs number of demos, one line per variant (mean over seeds)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for i, variant in enumerate(sorted({r["variant"] for r in rows})):
        cells = sorted({r["demos"] for r in rows if r["variant"] == variant})
        mean, lo, hi = [], [], []
        for n in cells:
            rs = [r for r in rows if r["variant"] == variant and r["demos"] == n]
            mean.append(sum(r["success_rate"] for r in rs) / len(rs))
            lo.append(min(r["success_ci95"][0] for r in rs))
            hi.append(max(r["success_ci95"][1] for r in rs))
        ax.plot(cells, mean, "o-", color=f"C{i}", label=variant)
        ax.fill_between(cells, lo, hi, color=f"C{i}", alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("demonstrations")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
