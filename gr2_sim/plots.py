"""Figures from run folders (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

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


VARIANT_ORDER = ("scratch", "pretrained", "no-video", "bc")  # sweep columns: the DiT's, then the baselines


def plot_success_vs_demos(rows: list[dict], out: Path) -> Path:
    """Success rate vs number of demos, one line per variant: seeds pooled (successes and episodes summed)
    with the pooled 95% Wilson interval as error bars, variants side by side around each demo count."""
    from gr2_sim.stats import wilson_interval

    fig, ax = plt.subplots(figsize=(5, 3.6))
    variants = sorted({r["variant"] for r in rows},
                      key=lambda v: (VARIANT_ORDER.index(v) if v in VARIANT_ORDER else len(VARIANT_ORDER), v))
    for i, variant in enumerate(variants):
        cells = sorted({r["demos"] for r in rows if r["variant"] == variant})
        rate, lo, hi = [], [], []
        for n in cells:
            rs = [r for r in rows if r["variant"] == variant and r["demos"] == n]
            k, e = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
            low, high = wilson_interval(k, e)
            rate.append(k / e)
            lo.append(k / e - low)
            hi.append(high - k / e)
        dodge = 1.06 ** (i - (len(variants) - 1) / 2)  # side by side on the log axis
        ax.errorbar([n * dodge for n in cells], rate, yerr=[lo, hi], fmt="o-", color=f"C{i}", capsize=3,
                    label=variant)
    _success_axis(ax, "success rate")
    demos = sorted({r["demos"] for r in rows})
    ax.set_xticks(demos, [str(n) for n in demos])
    ax.minorticks_off()
    ax.set_xlim(min(demos) / 1.4, max(demos) * 1.4)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _save(fig, out: Path) -> Path:
    out = Path(out)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _yerr(rates: list[float], intervals: list[list[float]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars from (low, high) intervals around ``rates``."""
    return [[max(0.0, r - lo) for r, (lo, _) in zip(rates, intervals, strict=True)],
            [max(0.0, hi - r) for r, (_, hi) in zip(rates, intervals, strict=True)]]


def plot_loss_correlation(records: list[dict], checkpoints: list[dict], out: Path) -> Path:
    """Left: training video loss and action loss (lines) and their held-out MSEs (dots) on one graph, twin log
    axes. Right: rollout success (95% Wilson interval) at the kept checkpoints."""
    fig, (ax, ax_s) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    train = [r for r in records if "video_loss" in r]
    val = [r for r in records if "val_video_mse" in r]
    ax.plot([r["step"] for r in train], [r["video_loss"] for r in train], color="C0", label="video loss (train)")
    ax.plot([r["step"] for r in val], [r["val_video_mse"] for r in val], "o", color="C0", ms=3,
            label="video MSE (held out)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("video", color="C0")
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in train if "action_loss" in r], [r["action_loss"] for r in train if "action_loss" in r],
             color="C3", label="action loss (train, normalised)")
    ax2.plot([r["step"] for r in val if "val_action_mse" in r], [r["val_action_mse"] for r in val
                                                                 if "val_action_mse" in r],
             "s", color="C3", ms=3, label="action MSE (held out, env units)")
    ax2.set_yscale("log")
    ax2.set_ylabel("action", color="C3")
    for c in checkpoints:
        ax.axvline(c["step"], color="0.85", lw=0.8, zorder=0)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper right")
    ax.set_title("phase 3: video and action losses")
    steps = [c["step"] for c in checkpoints]
    rates = [c["success_rate"] for c in checkpoints]
    if checkpoints:
        ax_s.errorbar(steps, rates, yerr=_yerr(rates, [c["success_ci95"] for c in checkpoints]), fmt="o-",
                      color="C2", capsize=3)
    ax_s.set_ylim(-0.02, 1.02)
    ax_s.set_xlabel("step")
    ax_s.set_ylabel("rollout success (95% CI)")
    ax_s.set_title("success at checkpoints")
    ax_s.grid(alpha=0.3)
    return _save(fig, out)


def plot_transfer(cells: list[dict], differences: list[dict], out: Path) -> Path:
    """Left: success vs demos per variant (seeds pooled, 95% Wilson). Right: pre-trained minus scratch (95%
    Newcombe)."""
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, variant in enumerate(("scratch", "pretrained")):
        cs = sorted((c for c in cells if c["variant"] == variant), key=lambda c: c["demos"])
        if cs:
            rates = [c["success_rate"] for c in cs]
            ax.errorbar([c["demos"] for c in cs], rates, yerr=_yerr(rates, [c["success_ci95"] for c in cs]),
                        fmt="o-", color=f"C{i}", capsize=3, label=variant)
    _success_axis(ax, "success rate (95% CI)")
    if differences:
        d = [x["difference"] for x in differences]
        lo = [x["difference"] - x["ci95"][0] for x in differences]
        hi = [x["ci95"][1] - x["difference"] for x in differences]
        ax_d.errorbar([x["demos"] for x in differences], d, yerr=[lo, hi], fmt="o-", color="C2", capsize=3)
    ax_d.axhline(0, color="0.5", lw=0.8)
    ax_d.set_xscale("log")
    ax_d.set_ylim(-1.02, 1.02)
    ax_d.set_xlabel("demonstrations")
    ax_d.set_ylabel("pre-trained - scratch (95% Newcombe)")
    ax_d.grid(alpha=0.3)
    return _save(fig, out)


def plot_attention_by_layer(models: dict[str, dict], out: Path) -> Path:
    """Spatial index per layer (bars: head mean; dots: heads), one group per model, one panel per noise level."""
    labels = list(models)
    levels = len(next(iter(models.values()))["levels"])
    fig, axes = plt.subplots(1, levels, figsize=(4.2 * levels, 3.4), squeeze=False)
    for li, ax in enumerate(axes[0]):
        width = 0.8 / len(labels)
        for mi, label in enumerate(labels):
            level = models[label]["levels"][li]
            per_head = level["spatial_index"]  # [layer][head]
            x = [layer + (mi - (len(labels) - 1) / 2) * width for layer in range(len(per_head))]
            ax.bar(x, level["spatial_index_by_layer"], width, color=f"C{mi}", alpha=0.7, label=label)
            for xi, heads in zip(x, per_head, strict=True):
                ax.plot([xi] * len(heads), heads, ".", color="k", ms=3)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xticks(range(len(models[labels[0]]["levels"][li]["spatial_index"])))
        ax.set_xlabel("layer")
        ax.set_ylabel("spatial index (0 = uniform, 1 = own frame)")
        ax.set_title(f"noise fraction {models[labels[0]]['levels'][li]['noise_fraction']:g}")
        ax.legend(fontsize=8)
    return _save(fig, out)


def plot_attention_heatmap(models: dict[str, dict], examples: dict, out: Path) -> Path:
    """Per model: the last layer's token-by-token attention for one example (heads averaged; lines at frame
    boundaries; frame 0 = conditioning), and the future frames' mass per key frame in that layer."""
    labels = list(models)
    fig, axes = plt.subplots(len(labels), 2, figsize=(9, 4 * len(labels)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, label in zip(axes, labels, strict=True):
        level = models[label]["levels"][0]
        n, F = level["tokens_per_frame"], level["frames"]
        im = row[0].imshow(examples[label], cmap="viridis", interpolation="nearest")
        for b in range(1, F):
            row[0].axhline(b * n - 0.5, color="w", lw=0.6)
            row[0].axvline(b * n - 0.5, color="w", lw=0.6)
        row[0].set_title(f"{label}: last layer, one example (t = {level['t']})")
        row[0].set_xlabel("key token (frame-major)")
        row[0].set_ylabel("query token")
        fig.colorbar(im, ax=row[0], fraction=0.046)
        readout = level["readout_frames"][-1]  # [future frame][key frame]
        im2 = row[1].imshow(readout, cmap="magma", vmin=0, aspect="auto")
        row[1].set_xticks(range(F), ["cond"] + [f"f{k}" for k in range(1, F)])
        row[1].set_yticks(range(F - 1), [f"f{k}" for k in range(1, F)])
        row[1].set_xlabel("key frame")
        row[1].set_ylabel("future query frame (read by the action head)")
        row[1].set_title(f"last layer mass (uniform {1 / F:.2f})")
        for (i, j), v in np.ndenumerate(np.asarray(readout)):
            row[1].text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 * np.max(readout) else "k",
                        fontsize=7)
        fig.colorbar(im2, ax=row[1], fraction=0.046)
    return _save(fig, out)


def plot_head_vs_idm(errors: dict, rollouts: dict, out: Path) -> Path:
    """Held-out action MSE per readout (95% bootstrap CI); rollout success (95% Wilson) and query latency per mode."""
    fig, (ax_e, ax_s, ax_l) = plt.subplots(1, 3, figsize=(12, 3.6))
    names = [k for k in ("head", "denoise", "idm_generated", "idm_real") if k in errors]
    means = [errors[k]["mean"] for k in names]
    ax_e.bar(names, means, yerr=_yerr(means, [errors[k]["ci95"] for k in names]), capsize=3,
             color=["C0", "C1", "C2", "0.6"][:len(names)])
    ax_e.set_ylabel("held-out action MSE (env units)")
    ax_e.tick_params(axis="x", labelrotation=20)
    modes = list(rollouts)
    rates = [rollouts[m]["success_rate"] for m in modes]
    ax_s.bar(modes, rates, yerr=_yerr(rates, [rollouts[m]["success_ci95"] for m in modes]), capsize=3,
             color=["C0", "C1", "C2"][:len(modes)])
    ax_s.set_ylim(0, 1.02)
    ax_s.set_ylabel("rollout success (95% CI)")
    lat = [rollouts[m]["query_latency_ms"] for m in modes]
    med = [x["median"] or 0.0 for x in lat]
    ax_l.bar(modes, med, yerr=[[0] * len(modes), [max(0.0, (x["p95"] or 0.0) - m) for x, m in zip(lat, med, strict=True)]],
             capsize=3, color=["C0", "C1", "C2"][:len(modes)])
    ax_l.set_ylabel("query latency (ms, median; bar to p95)")
    return _save(fig, out)


def plot_probe_errors(per_kind: dict, models: tuple[str, ...], out: Path) -> Path:
    """Mask MSE per probe kind and model (mean over clips, 95% bootstrap interval)."""
    kinds = list(per_kind)
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(kinds), 3.6))
    width = 0.8 / len(models)
    for mi, model in enumerate(models):
        stats = [per_kind[k][model]["mask_mse"] for k in kinds]
        means = [s["mean"] if s["mean"] is not None else np.nan for s in stats]
        err = [[max(0.0, m - (s["ci95"][0] if s["ci95"][0] is not None else m)) for m, s in zip(means, stats, strict=True)],
               [max(0.0, (s["ci95"][1] if s["ci95"][1] is not None else m) - m) for m, s in zip(means, stats, strict=True)]]
        x = [i + (mi - (len(models) - 1) / 2) * width for i in range(len(kinds))]
        ax.bar(x, means, width, yerr=err, capsize=2, color=f"C{mi}", label=model)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel("MSE inside the object's mask")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out)


def plot_probe_strips(clips: dict, predictions: dict, strides: dict, out: Path) -> Path:
    """Per probe kind (first clip): the conditioning frame and the real future frames (mask outlined in red),
    then each model's predicted frames for the same window (for occlusion: the window hiding the ball most)."""
    kinds, models = list(clips), list(predictions)
    T = predictions[models[0]][kinds[0]].shape[2]
    fig, axes = plt.subplots(len(kinds) * (1 + len(models)), T + 1, figsize=(1.3 * (T + 1), 1.3 * len(kinds) *
                                                                              (1 + len(models))), squeeze=False)
    stride = strides[models[0]]
    row = 0
    for kind in kinds:
        clip = clips[kind][0]
        n_win = predictions[models[0]][kind].shape[1]
        starts = [w * T for w in range(n_win)]
        hidden = [sum(not clip["visible"][s + (k + 1) * stride] for k in range(T)) for s in starts]
        w = int(np.argmax(hidden)) if kind == "occlusion" and max(hidden) else n_win // 2
        s = starts[w]
        real = [clip["frames"][s + k * stride] for k in range(T + 1)]
        for k, frame in enumerate(real):
            ax = axes[row][k]
            ax.imshow(frame)
            if k and clip["masks"][s + k * stride].any():
                ax.contour(clip["masks"][s + k * stride], levels=[0.5], colors="r", linewidths=0.6)
            ax.set_title("cond" if k == 0 else f"+{k * stride}", fontsize=7)
        axes[row][0].set_ylabel(f"{kind}\nreal", fontsize=7)
        row += 1
        for model in models:
            pred = predictions[model][kind][0]
            wm = min(w, pred.shape[0] - 1)
            axes[row][0].imshow(real[0])
            for k in range(min(T, pred.shape[1])):
                axes[row][k + 1].imshow(np.clip(pred[wm, k].astype(np.float32), 0, 1))
            axes[row][0].set_ylabel(model, fontsize=7)
            row += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, out)


def _success_axis(ax, ylabel: str) -> None:
    """Success rate (0..1) against demonstrations on a log axis."""
    ax.set_xscale("log")
    ax.set_xlabel("demonstrations")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    ax.grid(alpha=0.3)
