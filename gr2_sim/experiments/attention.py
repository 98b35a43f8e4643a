"""attention: do the DiT's tokens attend within their own frame (spatial) or across frames (temporal)?

For a pre-trained and a scratch phase-3 model (``--pretrained`` / ``--scratch`` run folders; when absent the
experiment trains them: phase 1 on synthetic video then phase 3, and phase 3 alone), on held-out demo windows
noised to each ``--noise-levels`` fraction of the diffusion range, it reads every layer's attention maps
(``VideoActionDiT.forward(return_attention=True)``: (B, heads, N, N), tokens frame-major, frame 0 = the
conditioning frame) and reports per layer and head:

- ``within_frame``: the share of a query token's attention mass on tokens of its own frame, averaged over query
  tokens and windows. Uniform attention gives n/N = 1/F (F = T + 1 frames), so
- ``spatial_index`` = (within - 1/F) / (1 - 1/F): 0 = as uniform, 1 = only its own frame, < 0 = prefers other
  frames (temporal);
- ``readout``: for the future-frame tokens (the ones the action head pools), the mass they send to each frame:
  (T query frames x F key frames) per layer; summarised as the share on the conditioning frame, on their own
  frame and on the other future frames (each 1/F, 1/F, (T-1)/F under uniform attention);
- if the model has an attention-pooling action head (``model.action_pool``), its per-token weights per future frame.

Outputs: ``DIR/summary.json``, ``DIR/attention_by_layer.png`` (spatial index per layer, both models, one panel
per noise level; dots are heads), ``DIR/attention_heatmap.png`` (token-by-token map of the last layer for one
example, heads averaged, frame boundaries drawn; and the readout frames matrix).

CPU budget at the defaults with both runs given: under a minute. When it trains them (``small``, 2000 phase-1
steps, 2 x 2000 phase-3 steps, 200 Reach demos, 1000 clips): about 35 minutes on 2 cores (estimated from the
README's training throughput; not timed end to end).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from gr2_sim.errors import UserError
from gr2_sim.experiments import common

MODELS = ("pretrained", "scratch")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_common_options(p)
    common.add_data_options(p, env="GR2Sim/Reach-v0", demos=200, synth=True)
    p.add_argument("--pretrained", default=None, help="run folder of a pre-trained model (default: train one)")
    p.add_argument("--scratch", default=None, help="run folder of a scratch model (default: train one)")
    p.add_argument("--steps", type=int, default=2000, help="phase-3 steps of the runs it trains")
    p.add_argument("--pretrain-steps", type=int, default=2000, help="phase-1 steps of the pre-trained run it trains")
    p.add_argument("--windows", type=int, default=64, help="held-out windows averaged over")
    p.add_argument("--noise-levels", type=float, nargs="+", default=[0.5, 1.0, 0.1],
                   help="diffusion noise as a fraction of the range (1.0 = pure noise, as the head readout sees); "
                        "the first one is drawn in the heatmap")


def ensure_runs(args, out: Path) -> dict[str, Path]:
    runs = {"pretrained": Path(args.pretrained) if args.pretrained else None,
            "scratch": Path(args.scratch) if args.scratch else None}
    if all(runs.values()):
        return runs
    demos = common.demo_data(args, out)
    phase3 = dict(stage="action", data=str(demos), demos=args.demos, steps=args.steps, batch_size=args.batch_size,
                  seed=args.seed, device=args.device)
    if runs["pretrained"] is None:
        p1 = common.train_run(out / "runs" / "phase1", stage="video", data=str(common.synth_data(args, out)),
                              preset=args.preset, steps=args.pretrain_steps, batch_size=args.batch_size,
                              seed=args.seed, device=args.device)
        runs["pretrained"] = common.train_run(out / "runs" / "pretrained", init=str(p1), **phase3)
    if runs["scratch"] is None:
        runs["scratch"] = common.train_run(out / "runs" / "scratch", preset=args.preset, **phase3)
    return runs


def load_model(run: Path):
    from gr2_sim import checkpoint as ckpt

    return ckpt.load_dit(run, what="the attention study"), ckpt.load_config(run), ckpt.load_normalizer(run)


def held_out_windows(data: Path, model, run_config: dict, normalizer, windows: int, seed: int):
    """A fixed batch of held-out windows shaped for ``model`` (cond, future, text, state)."""
    from gr2_sim.data import load_episodes
    from gr2_sim.dataset import WindowSampler

    cfg = model.config
    valid = load_episodes(data, split="valid")
    if not valid.num_episodes:
        raise UserError(f"{data} has no held-out (valid) episodes; collect at least 2 episodes")
    stride = int(run_config.get("train", {}).get("frame_stride", 1))
    sampler = WindowSampler(valid, n_future=cfg.n_future, normalizer=normalizer, max_text_len=cfg.max_text_len,
                            vocab_size=cfg.vocab_size, stride=stride, use_actions=False,
                            use_text=run_config.get("stage") != "video", use_state=cfg.state_dim > 0)
    return sampler.batch(sampler.fixed_rows(windows, seed))


def pool_weights_hook(model, store: dict):
    """Capture the action pool's inputs so its per-token weights can be computed (None if there is no pool)."""
    pool = getattr(model, "action_pool", None)
    if pool is None:
        return None
    return pool.register_forward_hook(
        lambda module, inputs, output: store.__setitem__("inputs", tuple(x.detach() for x in inputs)))


def pool_weights(pool, inputs) -> np.ndarray:
    """Attention-pool weights (B, T, H, 2n): per future frame, over the conditioning frame's n tokens, then
    that frame's own n tokens (see ``gr2_sim.model.AttentionPool``)."""
    return pool(*inputs, return_weights=True)[1].numpy()


def attention_stats(model, batch: dict, fraction: float, seed: int, chunk: int = 8) -> dict:
    """Per layer and head: within-frame share, spatial index, readout frames (see the module docstring)."""
    import torch

    from gr2_sim.diffusion import Diffusion

    cfg, diffusion = model.config, Diffusion(model.config)
    n, F, T = cfg.patches_per_frame, cfg.n_future + 1, cfg.n_future
    N = F * n
    frame_of = torch.arange(N) // n
    same = (frame_of[:, None] == frame_of[None, :]).float()  # (N, N)
    onehot = torch.nn.functional.one_hot(frame_of, F).float()  # (N, F): key token -> its frame
    t_value = round(fraction * (diffusion.num_steps - 1))
    gen = torch.Generator().manual_seed(seed)
    B = batch["cond"].shape[0]
    within = torch.zeros(cfg.n_layers, cfg.n_heads)
    to_frames = torch.zeros(cfg.n_layers, F, F)  # query frame x key frame, heads and windows averaged
    example, pool_example = None, None
    store: dict = {}
    hook = pool_weights_hook(model, store)
    try:
        with torch.no_grad():
            for i in range(0, B, chunk):
                part = {k: v[i:i + chunk] for k, v in batch.items()}
                b = part["cond"].shape[0]
                t = torch.full((b,), t_value, dtype=torch.long)
                noise = torch.randn(part["future"].shape, generator=gen)
                noisy = diffusion.q_sample(part["future"], t, noise)
                out = model(part["cond"], noisy, t, part["text"], part.get("state"), return_attention=True)
                for layer, attn in enumerate(out["attention"]):  # (b, h, N, N)
                    within[layer] += (attn * same).sum(-1).mean(-1).sum(0)
                    to_frames[layer] += _frame_to_frame(attn, onehot, n, F)
                if example is None:
                    example = out["attention"][-1][0].mean(0).numpy()  # (N, N), last layer, heads averaged
                    if "inputs" in store:
                        first = tuple(x[:1] for x in store["inputs"])
                        pool_example = pool_weights(model.action_pool, first)[0].mean(1)  # (T, 2n)
    finally:
        if hook is not None:
            hook.remove()
    within /= B
    to_frames /= B
    uniform = 1.0 / F
    spatial = (within - uniform) / (1 - uniform)
    readout = to_frames[:, 1:, :]  # (L, T, F): future-frame queries
    own = torch.stack([readout[:, k, k + 1] for k in range(T)], dim=1).mean(1)  # (L,)
    cond = readout[:, :, 0].mean(1)
    result = {
        "noise_fraction": fraction, "t": t_value, "windows": B, "frames": F, "tokens_per_frame": n,
        "uniform_within_frame": uniform,
        "within_frame": within.tolist(), "spatial_index": spatial.tolist(),
        "within_frame_by_layer": within.mean(1).tolist(), "spatial_index_by_layer": spatial.mean(1).tolist(),
        "spatial_index_mean": float(spatial.mean()),
        "readout_frames": readout.tolist(),
        "readout_by_layer": {"to_conditioning_frame": cond.tolist(), "to_own_frame": own.tolist(),
                             "to_other_future_frames": (1 - cond - own).tolist(),
                             "uniform": {"to_conditioning_frame": uniform, "to_own_frame": uniform,
                                         "to_other_future_frames": (T - 1) * uniform}},
    }
    if pool_example is not None:
        entropy = -(pool_example * np.log(np.clip(pool_example, 1e-12, None))).sum(-1)
        result["action_pool_weights_example"] = {
            "weights": pool_example.tolist(), "uniform": 1.0 / (2 * n),
            "keys": f"per future frame: the conditioning frame's {n} tokens, then that frame's own {n}",
            "share_on_conditioning_frame": pool_example[:, :n].sum(-1).tolist(),
            "entropy_over_uniform": (entropy / math.log(2 * n)).tolist()}
    return {"stats": result, "example": example}


def _frame_to_frame(attn, onehot, n: int, F: int):
    """(b, h, N, N) attention -> (F, F) summed over windows: mean mass from a query frame's tokens to each frame."""
    mass = attn.mean(1) @ onehot  # (b, N, F): per query token, mass on each key frame
    return mass.reshape(mass.shape[0], F, n, F).mean(2).sum(0)  # (F query frames, F key frames)


def run(args: argparse.Namespace) -> int:
    import torch

    from gr2_sim.plots import plot_attention_by_layer, plot_attention_heatmap

    common.check_positive(args, "steps", "pretrain_steps", "windows", "demos", "batch_size")
    if any(not 0 <= f <= 1 for f in args.noise_levels):
        raise UserError(f"--noise-levels must be fractions in [0, 1], got {args.noise_levels}")
    started = time.perf_counter()
    out = Path(args.out)
    runs = ensure_runs(args, out)
    torch.manual_seed(args.seed)
    models, examples = {}, {}
    for label in MODELS:
        model, run_config, normalizer = load_model(runs[label])
        data = Path(args.data) if args.data else Path(run_config["data"])
        batch = held_out_windows(data, model, run_config, normalizer, args.windows, args.seed)
        levels = []
        for i, fraction in enumerate(args.noise_levels):
            res = attention_stats(model, batch, fraction, args.seed)
            levels.append(res["stats"])
            if i == 0:
                examples[label] = res["example"]
        models[label] = {"run": str(runs[label]), "stage": run_config.get("stage"), "init": run_config.get(
            "train", {}).get("init"), "layers": model.config.n_layers, "heads": model.config.n_heads,
            "action_pool": getattr(model.config, "action_pool", "mean"), "data": str(data), "levels": levels}
    figures = [plot_attention_by_layer(models, out / "attention_by_layer.png").name,
               plot_attention_heatmap(models, examples, out / "attention_heatmap.png").name]
    common.write_summary(out, args, started, {
        "models": models, "figures": figures,
        "definitions": {"within_frame": "share of a query's attention on its own frame's tokens; uniform = 1/F",
                        "spatial_index": "(within - 1/F) / (1 - 1/F): 0 uniform, 1 own frame only, <0 temporal",
                        "readout_frames": "[layer][future query frame k][key frame f], f = 0 the conditioning "
                                          "frame"},
    })
    return 0
