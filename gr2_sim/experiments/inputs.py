"""inputs: what does a trained policy look at? Action error when one input is shuffled across windows.

On held-out demo windows, the action head's error (MSE in env action units, per action part: translation,
rotation, gripper) is measured with the inputs as recorded, then with ONE input replaced by another window's:
the conditioning frame (the camera image), the instruction, the robot state. An input the model ignores
leaves the error unchanged; one it relies on raises it. The windows and the shuffle are fixed by ``--seed``;
the interval of each increase is a bootstrap over windows.

Read at a noise level: ``--noise 1.0`` (the default) is pure-noise future frames, the input of the one-pass
``head`` readout; lower levels show how much the future frames themselves give away.

This is the diagnostic that found the image ignored (docs/results.md): a model with a linear patch embedding
and adaLN-Zero gates gave the same actions for any camera image after 1000 steps on Reach.

CPU budget: seconds (512 windows, one forward pass per shuffled input).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common

INPUTS = ("image", "instruction", "state")
PARTS = {"translation": slice(0, 3), "rotation": slice(3, 6), "gripper": slice(6, None)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="experiment folder")
    p.add_argument("--run", required=True, nargs="+", help="phase-3 run folder(s) to probe")
    p.add_argument("--data", required=True, help="demos HDF5 file the runs were trained on (held-out split used)")
    p.add_argument("--windows", type=int, default=512, help="held-out windows")
    p.add_argument("--noise", type=float, default=1.0, help="noise level of the future frames, fraction of K - 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="valid", choices=("valid", "train"))
    p.add_argument("--first-steps", type=int, default=0,
                   help="only windows starting in the first N steps of their episode (the approach); 0 = all")


def probe(run: Path, data: Path, windows: int, noise: float, seed: int, split: str, first_steps: int = 0) -> dict:
    import torch

    from gr2_sim import checkpoint as ckpt
    from gr2_sim.data import load_episodes
    from gr2_sim.dataset import WindowSampler
    from gr2_sim.diffusion import Diffusion

    model = ckpt.load_dit(run, what="the inputs study")
    cfg = model.config
    normalizer = ckpt.load_normalizer(run)
    episodes = load_episodes(data, split=split)
    if episodes.actions is None:
        raise UserError(f"--data {data} holds no actions; give the demos file the run was trained on")
    sampler = WindowSampler(episodes, cfg.n_future, normalizer, cfg.max_text_len, cfg.vocab_size,
                            use_state=cfg.state_dim > 0)
    rows = np.arange(len(sampler))
    if first_steps:
        rows = rows[sampler.start_frames - episodes.episode_starts[sampler.episode_of] < first_steps]
    rows = np.sort(np.random.default_rng(seed).choice(rows, size=min(windows, len(rows)), replace=False))
    batch = sampler.batch(rows)
    gen = torch.Generator().manual_seed(seed)
    B = len(batch["cond"])
    perm = torch.randperm(B, generator=gen)
    if bool((perm == torch.arange(B)).any()):  # a window must never keep its own input
        perm = torch.roll(torch.arange(B), 1)
    diffusion = Diffusion(cfg)
    t = torch.full((B,), round(noise * (cfg.diffusion_steps - 1)), dtype=torch.long)
    noisy = diffusion.q_sample(batch["future"], t, torch.randn(batch["future"].shape, generator=gen))
    target = normalizer.unnormalize_actions(batch["actions"])
    keys = {"image": "cond", "instruction": "text", "state": "state"}

    def predict(swap: str | None):
        inputs = dict(batch)
        if swap is not None:
            inputs[keys[swap]] = batch[keys[swap]][perm]
        with torch.no_grad():
            return normalizer.unnormalize_actions(model(inputs["cond"], noisy, t, inputs["text"], inputs.get("state"))["actions"])

    def errors(swap: str | None) -> np.ndarray:
        return ((predict(swap) - target) ** 2).mean(1).numpy()  # (B, action_dim)

    base = errors(None)
    pred, rec = predict(None)[:, :, :2].reshape(-1, 2).numpy(), target[:, :, :2].reshape(-1, 2).numpy()
    result = {"run": str(run), "windows": B, "t": int(t[0]), "first_steps": first_steps,
              "as_recorded": part_means(base), "shuffled": {},
              # how well the horizontal motion is predicted: where to go is read from the image
              "xy_correlation": [float(np.corrcoef(pred[:, k], rec[:, k])[0, 1]) for k in range(2)]}
    for name in INPUTS:
        if name == "state" and "state" not in batch:
            continue
        err = errors(name)
        result["shuffled"][name] = {
            part: {"mse": float(err[:, sl].mean()),
                   "increase": common.bootstrap_mean_ci(err[:, sl].mean(1) - base[:, sl].mean(1), seed=seed)}
            for part, sl in PARTS.items() if err[:, sl].size}
    return result


def part_means(err: np.ndarray) -> dict[str, float]:
    return {part: float(err[:, sl].mean()) for part, sl in PARTS.items() if err[:, sl].size}


def plot(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        names = list(r["shuffled"])
        x = np.arange(len(names))
        for i, part in enumerate(("translation", "gripper")):
            vals = [r["shuffled"][n][part]["increase"]["mean"] for n in names]
            los = [r["shuffled"][n][part]["increase"]["ci95"][0] for n in names]
            his = [r["shuffled"][n][part]["increase"]["ci95"][1] for n in names]
            yerr = [np.subtract(vals, los), np.subtract(his, vals)]
            ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, yerr=yerr, capsize=3, label=part)
        ax.set_xticks(x, [f"{n}\nshuffled" for n in names])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(Path(r["run"]).name, fontsize=9)
        ax.set_ylabel("action MSE increase (env units)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    common.check_positive(args, "windows")
    if args.first_steps < 0:
        raise UserError(f"--first-steps must be >= 0 (0 = every window), got {args.first_steps}")
    if not 0 <= args.noise <= 1:
        raise UserError(f"--noise must be a fraction in [0, 1], got {args.noise}")
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = common.existing_file(args.data, "--data")
    results = [probe(Path(r), data, args.windows, args.noise, args.seed, args.split, args.first_steps)
               for r in args.run]
    figure = plot(results, out / "inputs.png")
    common.write_summary(out, args, started, {"data": str(data), "split": args.split, "results": results,
                                              "figures": [figure.name],
                                              "units": "MSE of actions in env units, averaged over the chunk"})
    return 0
