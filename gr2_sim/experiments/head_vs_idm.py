"""head-vs-idm: read actions from the DiT's hidden states, or label its imagined frames with inverse dynamics?

On held-out demo windows (``load_episodes(split="valid")`` + ``WindowSampler``), the action error (MSE in the
env's action units, unclipped, averaged over the chunk's T steps and A dimensions; mean over windows with a 95%
bootstrap interval, and per chunk step) of four readouts of the same phase-3 model (``--run``) and one
inverse-dynamics model (``--idm``, ``gr2-sim train --stage idm``):

    head            action head, one forward pass from pure-noise futures (``Diffusion.head_actions``)
    denoise         action head at the last of ``--ddim-steps`` DDIM steps (``Diffusion.ddim_sample``)
    idm_generated   the IDM on (o_t, o^_t+1), (o^_t+1, o^_t+2), ... of the DDIM-generated frames
    idm_real        the IDM on the real future frames: its upper bound (perfect video prediction)

plus the generated frames' MSE against the real ones. Then each policy readout (``GR2Policy`` modes head /
denoise / idm) is rolled out on ``--env`` test seeds: success rate (95% Wilson) and query latency (median, p95).

Outputs: ``DIR/summary.json``, ``DIR/head_vs_idm.png`` (error per readout; success and latency per mode),
``DIR/offline.json`` (cached held-out errors), ``DIR/rollouts/<mode>/eval.json``; trained runs in ``DIR/runs/``.

CPU budget at the defaults (Reach, 200 demos, ``small`` 2000 steps, IDM 2000 steps, 256 windows, 10 DDIM steps,
3 x 50 episodes): about 30 minutes on 2 cores, most of it training and the DDIM rollouts (estimated from the
README's throughput and latencies; not timed end to end). Measured with ``--run`` given, one torch thread beside
two other trainings: 29.6 minutes for the invocation that trained the IDM's last 1500 steps and ran every
readout and rollout (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gr2_sim.errors import UserError
from gr2_sim.experiments import common
from gr2_sim.io import atomic_write_text

READOUTS = ("head", "denoise", "idm_generated", "idm_real")
MODES = ("head", "denoise", "idm")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_common_options(p)
    common.add_data_options(p, env="GR2Sim/Reach-v0", demos=200)
    p.add_argument("--run", default=None, help="phase-3 run folder (default: train one on the demos)")
    p.add_argument("--idm", default=None, help="inverse-dynamics run folder (default: train one on the demos)")
    p.add_argument("--steps", type=int, default=2000, help="phase-3 steps when it trains the DiT")
    p.add_argument("--idm-steps", type=int, default=2000, help="steps when it trains the IDM")
    p.add_argument("--windows", type=int, default=256, help="held-out windows for the action errors")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--episodes", type=int, default=50, help="rollout episodes per readout")
    p.add_argument("--videos", type=int, default=0, help="rollout videos per readout")


def ensure_runs(args, out: Path) -> tuple[Path, Path, Path]:
    """(DiT run, IDM run, demos file)."""
    if args.data or not args.run:
        data = common.demo_data(args, out)
    else:  # the held-out demos of the data the given run was trained on
        from gr2_sim import checkpoint as ckpt

        data = Path(ckpt.load_config(args.run)["data"])
    common_cfg = dict(data=str(data), demos=args.demos, batch_size=args.batch_size, seed=args.seed, device=args.device)
    run = Path(args.run) if args.run else common.train_run(out / "runs" / "dit", stage="action", preset=args.preset,
                                                           steps=args.steps, **common_cfg)
    idm = Path(args.idm) if args.idm else common.train_run(out / "runs" / "idm", stage="idm", steps=args.idm_steps,
                                                           **common_cfg)
    return run, idm, data


def offline_errors(run: Path, idm_run: Path, data: Path, windows: int, ddim_steps: int, seed: int) -> dict:
    """Held-out action MSE (env units) of each readout: {readout: {"mean", "ci95", "n", "per_step"}}."""
    import torch

    from gr2_sim.data import load_episodes
    from gr2_sim.dataset import WindowSampler
    from gr2_sim.diffusion import Diffusion
    from gr2_sim.experiments.attention import load_model
    from policies.inverse_dynamics import load_idm

    model, run_config, normalizer = load_model(run)
    idm, idm_norm = load_idm(idm_run)
    cfg, diffusion = model.config, Diffusion(model.config)
    valid = load_episodes(data, split="valid")
    if not valid.num_episodes or valid.actions is None:
        raise UserError(f"{data} has no held-out demonstrations (valid split with actions)")
    stride = int(run_config.get("train", {}).get("frame_stride", 1))
    sampler = WindowSampler(valid, n_future=cfg.n_future, normalizer=None, max_text_len=cfg.max_text_len,
                            vocab_size=cfg.vocab_size, stride=stride, use_actions=True, use_text=True,
                            use_state=valid.states.shape[1] > 0)
    rows = sampler.fixed_rows(windows, seed)
    gen = torch.Generator().manual_seed(seed)
    errors = {k: [] for k in READOUTS}
    frame_mse = []
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            batch = sampler.batch(rows[i:i + 32])
            raw_state = batch.get("state")
            state = normalizer.normalize_states(raw_state) if cfg.state_dim else None
            idm_state = idm_norm.normalize_states(raw_state) if idm.config.state_dim else None
            cond, text, target = batch["cond"], batch["text"], batch["actions"]  # target: (b, T, A) env units
            head = diffusion.head_actions(model, cond, text, state, gen)
            frames, denoised = diffusion.ddim_sample(model, cond, text, state, ddim_steps, generator=gen)
            preds = {"head": normalizer.unnormalize_actions(head),
                     "denoise": normalizer.unnormalize_actions(denoised),
                     "idm_generated": idm_norm.unnormalize_actions(idm.chunk_actions(cond, frames, idm_state)),
                     "idm_real": idm_norm.unnormalize_actions(idm.chunk_actions(cond, batch["future"], idm_state))}
            for name, pred in preds.items():
                errors[name].append((pred - target).pow(2).mean(-1))  # (b, T)
            frame_mse.append((frames - batch["future"]).pow(2).mean(dim=(1, 2, 3, 4)))
    result = {}
    for name, chunks in errors.items():
        per = torch.cat(chunks)  # (windows, T)
        result[name] = {**common.bootstrap_mean_ci(per.mean(1).numpy(), seed=seed),
                        "per_step": per.mean(0).tolist()}
    result["generated_frames_mse"] = common.bootstrap_mean_ci(torch.cat(frame_mse).numpy(), seed=seed)
    return result


def rollouts(args, run: Path, idm: Path, out: Path) -> dict:
    from gr2_sim.evaluate import evaluate_run

    results = {}
    for mode in MODES:
        folder = out / "rollouts" / mode
        if not (folder / "eval.json").exists():
            evaluate_run(run, args.env, episodes=args.episodes, mode=mode, out_dir=folder, device=args.device,
                         videos=args.videos, ddim_steps=args.ddim_steps, idm_run=str(idm) if mode == "idm" else None,
                         seed=args.seed, progress=True)
        agg = json.loads((folder / "eval.json").read_text())["aggregated"]
        results[mode] = {k: agg[k] for k in ("success_rate", "success_ci95", "successes", "episodes",
                                             "query_latency_ms", "mean_length")}
    return results


def run(args: argparse.Namespace) -> int:
    from gr2_sim.plots import plot_head_vs_idm

    common.check_positive(args, "steps", "idm_steps", "windows", "ddim_steps", "episodes", "demos", "batch_size")
    started = time.perf_counter()
    out = Path(args.out)
    run_dir, idm, data = ensure_runs(args, out)
    cache = out / "offline.json"
    key = {"run": str(run_dir), "idm": str(idm), "data": str(data), "windows": args.windows,
           "ddim_steps": args.ddim_steps, "seed": args.seed}
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if cached.get("key") != key:
        cached = {"key": key, "errors": offline_errors(run_dir, idm, data, args.windows, args.ddim_steps, args.seed)}
        atomic_write_text(cache, json.dumps(common.jsonable(cached), indent=2))
    errors = cached["errors"]
    rolled = rollouts(args, run_dir, idm, out)
    figure = plot_head_vs_idm(errors, rolled, out / "head_vs_idm.png")
    best = min(READOUTS[:3], key=lambda k: errors[k]["mean"])
    common.write_summary(out, args, started, {
        "env": args.env, "run": str(run_dir), "idm": str(idm), "data": str(data), "action_mse": errors,
        "most_accurate_deployable_readout": best, "rollouts": rolled, "figures": [figure.name],
        "units": "action MSE in env action units (unclipped), mean over chunk steps and action dims; "
                 "frames in [-1, 1]",
    })
    return 0
