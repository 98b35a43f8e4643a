"""One training loop for all three GR-2 phases; the stage chooses the data and the loss terms.

    video        phase 1: non-robot synthetic video, no instruction, no actions    L = L_video
    robot-video  phase 2: robot video, with instructions, no action labels         L = L_video
    action       phase 3: demonstrations                                           L = L_video + lambda L_action
    idm          the inverse-dynamics model (o_t, o_t+1) -> a_t on demonstrations  L = L_action
    bc           the plain image-BC baseline (o_t, text, state) -> a_t..a_t+T-1     L = L_action

What each stage builds and optimises lives in ``gr2_sim/objectives.py``; this file is the loop.

The same code runs on one CPU, one GPU, or under ``torchrun`` on several processes/machines
(DistributedDataParallel: gloo on CPU, NCCL on GPU; rank 0 logs and writes checkpoints).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from gr2_sim import checkpoint as ckpt
from gr2_sim.data import concat_episodes, load_episodes
from gr2_sim.dataset import Normalizer, WindowSampler
from gr2_sim.device import affinity_cores, autocast, enable_tf32, parse_threads, resolve_device, set_threads
from gr2_sim.errors import UserError
from gr2_sim.objectives import make_objective
from gr2_sim.train_config import STAGES, TrainConfig  # defined there (no import circle); importable from here


class TrainingDiverged(UserError):
    pass


# ------------------------------------------------------------------------------------------ set-up helpers
def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) — initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def load_data(cfg: TrainConfig):
    """(train episodes, valid episodes or None), checked against the stage."""
    train = load_episodes(cfg.data, max_demos=cfg.demos, split="train")
    if cfg.stage == "action" and train.actions is None:
        raise UserError(f"{cfg.data} holds {train.kind} data without actions, but --stage action needs "
                        f"demonstrations: collect them with `gr2-sim collect` (without --no-actions)")
    if cfg.extra_data:  # every episode of each file joins the training split; validation stays on --data's
        extra = [load_episodes(path, split="all") for path in cfg.extra_data]
        for path, part in zip(cfg.extra_data, extra, strict=True):
            if part.env_id != train.env_id:
                raise UserError(f"--extra-data {path} was recorded on {part.env_id}, --data {cfg.data} on "
                                f"{train.env_id}: the extra episodes must come from the same task")
        train = concat_episodes(train, *extra)
    try:
        valid = load_episodes(cfg.data, split="valid")
        valid = valid if valid.num_episodes else None
    except UserError:
        valid = None
    return train, valid


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, no weight decay on biases, norms, positions and embeddings. The fused kernel where this torch
    has it (CPU since 2.4): one pass over all parameters instead of a Python loop over ~100 tensors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "pos" in name or "embed.weight" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


# ------------------------------------------------------------------------------------------ the loop
def train(cfg: TrainConfig) -> Path:
    """Run (or resume) one training stage; returns the run folder."""
    device = resolve_device(cfg.device)
    rank, world, device = setup_distributed(device)
    if device.type == "cuda":
        enable_tf32()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
    else:  # torchrun on one machine: the processes share the free cores
        set_threads(cfg.threads, limit=max(1, affinity_cores() // world) if world > 1 else None, say=rank == 0)
    bf16 = cfg.bf16 and device.type == "cuda"
    if rank == 0 and device.type == "cuda":
        print(f"device: {device} ({torch.cuda.get_device_name(device)}), TF32 matmuls, "
              f"{'bf16 autocast' if bf16 else 'float32'}", flush=True)
    run = Path(cfg.out)
    if cfg.resume:
        ckpt.check_run(run, need_trainer_state=True)
    elif (run / ckpt.TRAINER_STATE).exists():
        raise UserError(f"run folder {run} already holds a training run; pass --resume to continue it, "
                        f"or choose another --out")

    train_eps, valid_eps = load_data(cfg)
    data_env_kwargs = train_eps.env_kwargs
    train_aux = None
    if cfg.aux_state:
        from gr2_sim.dataset import split_aux_state

        train_eps, train_aux = split_aux_state(train_eps, cfg.aux_state, cfg.data)
        if valid_eps is not None:  # held-out episodes: the model's inputs only (validation scores actions)
            valid_eps, _ = split_aux_state(valid_eps, cfg.aux_state, cfg.data)
    objective = make_objective(cfg, train_eps, run, cfg.resume)
    normalizer = Normalizer.fit(train_eps) if objective.needs_normalizer else None
    if cfg.resume and ckpt.load_normalizer(run) is not None:
        normalizer = ckpt.load_normalizer(run)
    sampler_args = dict(objective.sampler_args(), normalizer=normalizer, stride=cfg.frame_stride)
    sampler = WindowSampler(train_eps, **sampler_args, aux=train_aux)
    val_sampler = WindowSampler(valid_eps, **sampler_args) if valid_eps is not None else None

    torch.manual_seed(cfg.seed)
    model = objective.build_model(cfg.init if not cfg.resume else None).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    data_gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    noise_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + rank)
    step = 0
    best = math.inf  # lowest held-out error so far (RUN/best/ holds its weights)
    wall_before = 0.0  # seconds of training before this process (a resumed run counts its earlier sessions)
    if cfg.resume:
        state = ckpt.load_trainer_state(run)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        data_gen.set_state(state["data_gen"][rank % len(state["data_gen"])])
        noise_gen.set_state(state["noise_gen"][rank % len(state["noise_gen"])])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        wall_before = float(state.get("wall_s", 0.0))
        best = float(state.get("best_val", math.inf))
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            objective.wrap_for_ddp(model), device_ids=[device.index] if device.type == "cuda" else None)

    if cfg.compile:
        ddp_model = compile_or_eager(ddp_model, objective, sampler, cfg.batch_size, device, say=rank == 0)

    run_config = {**objective.config_dict(), "train": dataclasses.asdict(cfg), "stage": cfg.stage,
                  "data": str(cfg.data), "env_id": train_eps.env_id,
                  # what the policy is evaluated with: without the privileged positions when they were targets
                  "env_kwargs": ({k: v for k, v in data_env_kwargs.items() if k != "object_state"}
                                 if cfg.aux_state else data_env_kwargs),
                  "data_env_kwargs": data_env_kwargs, "num_train_episodes": train_eps.num_episodes,
                  "num_train_windows": len(sampler), "world_size": world}
    if rank == 0:
        ckpt.save_run_files(run, run_config, normalizer)
        if cfg.resume:
            ckpt.truncate_metrics(run, step)
    val_rows = val_sampler.fixed_rows(cfg.val_windows) if val_sampler is not None else None

    def gather_rng(gen: torch.Generator) -> list[torch.Tensor]:
        if world == 1:
            return [gen.get_state()]
        states = [torch.empty_like(gen.get_state()) for _ in range(world)]
        dist.all_gather_object(states, gen.get_state())
        return states

    def save_checkpoint() -> None:
        data_states, noise_states = gather_rng(data_gen), gather_rng(noise_gen)
        if world > 1:  # the replicas must hold identical weights: record each rank's checksum
            checksum = torch.tensor([float(sum(p.double().sum() for p in model.parameters()))])
            sums = [torch.zeros(1, dtype=checksum.dtype) for _ in range(world)]
            dist.all_gather(sums, checksum)
            log({"step": step, "rank_param_checksums": [float(x) for x in sums]})
        if rank != 0:
            return
        ckpt.save_trainer_state(run, {"step": step, "model": model.state_dict(), "ema": ema.state_dict(),
                                      "optimizer": optimizer.state_dict(), "data_gen": data_states,
                                      "noise_gen": noise_states, "torch_rng": torch.get_rng_state(),
                                      "wall_s": wall_s(), "best_val": best})
        ckpt.save_weights(run, model, ema, step)
        if cfg.keep_every and (step % cfg.keep_every == 0 or step == cfg.steps):
            ckpt.keep_checkpoint(run, step)

    loop_start = time.perf_counter()

    def wall_s() -> float:
        """Wall-clock seconds this run has trained, over all its sessions (validation and saving included)."""
        return wall_before + time.perf_counter() - loop_start

    def log(record: dict) -> None:
        record = {**record, "wall_s": round(wall_s(), 2)}
        if rank == 0:
            with open(run / ckpt.METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")

    bar = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.stage}", unit="step", dynamic_ncols=True)
    model.train()
    window_start, window_steps = time.perf_counter(), 0
    while step < cfg.steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sampler.sample(cfg.batch_size, data_gen, device)
        with autocast(device, bf16):
            out = objective.loss(ddp_model, batch, noise_gen)
        log_step = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
        save_step = (step + 1) % cfg.ckpt_every == 0 or bool(cfg.keep_every and (step + 1) % cfg.keep_every == 0)
        # A host sync: every step on CPU (free there); on CUDA (where it would stall the GPU's queue) at log and
        # checkpoint steps only: a NaN since the last check has spread to the weights, so no NaN is ever saved.
        if (device.type != "cuda" or log_step or save_step) and not torch.isfinite(out["loss"]):
            raise TrainingDiverged(f"the loss became {out['loss'].item()} at step {step + 1}; the last good "
                                   f"checkpoint in {run} is kept. Lower --lr (now {cfg.lr}) and resume "
                                   f"with --resume, or restart")
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        window_steps += 1
        if log_step:
            elapsed = time.perf_counter() - window_start
            record = {"step": step, "lr": lr,
                      "samples_per_s": window_steps * cfg.batch_size * world / max(elapsed, 1e-9)}
            record.update({k: out[k].item() for k in ("loss", "video_loss", "action_loss", "aux_loss", "recon_loss")
                           if out.get(k) is not None})
            log(record)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("video_loss", "action_loss")})
            window_start, window_steps = time.perf_counter(), 0
        if val_rows is not None and rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            ema.eval()
            metrics = objective.validate(ema, val_sampler, val_rows, device, normalizer)
            log({"step": step, **metrics})
            metric = "val_action_mse" if "val_action_mse" in metrics else "val_video_mse"
            if cfg.keep_best and metric in metrics and metrics[metric] < best:
                best = float(metrics[metric])
                ckpt.save_best(run, model, ema, step, metric, best)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or (cfg.keep_every and step % cfg.keep_every == 0):
            save_checkpoint()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if world > 1:
        dist.barrier()
    return run


def compile_or_eager(module: torch.nn.Module, objective, sampler, batch_size: int, device: torch.device,
                     say: bool = True):
    """``torch.compile(module)``, compiled now by one forward and backward pass on a throw-away batch (the
    weights, gradients and random streams are left as they were), or ``module`` itself with a warning if
    compiling fails (no C++ compiler, an unsupported platform)."""
    import warnings

    if say:
        print("--compile: compiling the training step (under a minute on 2 CPU cores) ...", flush=True)
    compiled = torch.compile(module)
    rng = torch.get_rng_state()
    try:
        batch = sampler.sample(batch_size, torch.Generator().manual_seed(0), device)
        objective.loss(compiled, batch, torch.Generator().manual_seed(0))["loss"].backward()
    except Exception as err:  # torch's compile stack raises many types
        warnings.warn(f"--compile: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                      f"training eagerly", stacklevel=2)
        return module
    finally:
        module.zero_grad(set_to_none=True)
        torch.set_rng_state(rng)
    return compiled


# ------------------------------------------------------------------------------------------ the command
def add_arguments(p) -> None:
    p.add_argument("--stage", required=True, choices=STAGES, help="video | robot-video | action | idm | bc")
    p.add_argument("--data", required=True, help="HDF5 file from `gr2-sim collect` or `gr2-sim synth`")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--init", default=None, help="run folder of the previous phase to start from")
    p.add_argument("--demos", type=int, default=None, help="use only the first N training episodes")
    p.add_argument("--extra-data", action="append", default=None, metavar="FILE",
                   help="more training episodes, all of FILE (e.g. robot video labelled by `gr2-sim label`); "
                        "repeatable; validation stays on --data's held-out episodes")
    p.add_argument("--preset", default=None, help="model size: tiny | small | base (default small, or --init's)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--action-weight", type=float, default=TrainConfig.action_weight, help="lambda")
    p.add_argument("--text-dropout", type=float, default=TrainConfig.text_dropout, metavar="P",
                   help="phases 2-3: probability per sample of training with the null instruction (classifier-free "
                        "guidance of the video); 0: never")
    p.add_argument("--video-weight", type=float, default=TrainConfig.video_weight,
                   help="weight of the video loss (0: actions only, no future frames to denoise; --stage action)")
    p.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay,
                   help="decay of the EMA weights that are validated, kept and rolled out (0: raw weights)")
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup, help="linear warm-up steps before cosine decay")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", default="auto", metavar="N",
                   help="CPU threads (default auto: OMP_NUM_THREADS if set, else one per core not busy at the start; "
                        "two threads sharing a core with another job run ~25x slower)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false",
                   help="on CUDA, train in float32 (TF32 matmuls) instead of under bf16 autocast")
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    p.add_argument("--ckpt-every", type=int, default=TrainConfig.ckpt_every)
    p.add_argument("--no-state", action="store_true", help="do not condition on proprioception")
    p.add_argument("--shift", type=int, default=TrainConfig.shift,
                   help="random-shift augmentation of the training frames in pixels (0: none)")
    p.add_argument("--pure-noise", type=float, default=TrainConfig.pure_noise, metavar="FRACTION",
                   help="--stage action: fraction of samples with pure-noise future frames (the head readout's input)")
    p.add_argument("--action-on-all-noise", dest="action_on_pure_noise", action="store_false",
                   help="--stage action: the action loss counts every sample, at every noise level of the futures "
                        "(default: only the pure-noise samples, the head readout's input)")
    p.add_argument("--video-batch", type=int, default=TrainConfig.video_batch, metavar="N",
                   help="--stage action, with a model whose head reads the keypoints only (the small and base "
                        "presets): the video loss on the first N samples of each batch, the action loss (keypoints "
                        "and head only, cheap) on all of them (0: all; default: a quarter of the batch for such "
                        "models, all for the others)")
    p.add_argument("--recon-weight", type=float, default=TrainConfig.recon_weight, metavar="W",
                   help="weight of the keypoint decoder's loss, for a model built with --set keypoint_decoder=SIDE "
                        "(the keypoints decoded into the current and the last future frame: no labels)")
    p.add_argument("--change-weight", type=float, default=TrainConfig.change_weight, metavar="W",
                   help="video loss weight on the pixels that change, relative to the others: 1 + W (0: plain MSE)")
    p.add_argument("--aux-state", type=int, default=0, metavar="K",
                   help="privileged training: the last K state values of the data (6 with object_state) are targets "
                        "of an auxiliary head, not inputs; the policy still runs from the camera (0: off)")
    p.add_argument("--no-keep-best", dest="keep_best", action="store_false",
                   help="do not keep the weights of the lowest held-out error in RUN/best/ (kept by default; "
                        "evaluate them with --ckpt RUN/best)")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep the weights every N steps in RUN/checkpoints/step_N/ (each a loadable run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a model config field of the preset, e.g. --set n_layers=6 --set cond_stem=conv")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward pass: 4-8%% faster on a 2-core CPU after compiling at the "
                        "start (needs a C++ compiler; falls back to eager with a warning)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_overrides(items: list[str], check: bool = True) -> dict:
    """``["n_layers=6", "cond_stem=conv"]`` -> ``{"n_layers": 6, "cond_stem": "conv"}`` (values as JSON, else
    text); the field names are checked against ModelConfig (``check``; --stage bc and idm check them against
    BCConfig and IDMConfig)."""
    from gr2_sim.config import _check_fields

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set n_layers=6")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    if check:
        _check_fields(out)
    return out


def run(args) -> int:
    cfg = TrainConfig(stage=args.stage, data=args.data, out=args.out, init=args.init, demos=args.demos,
                      extra_data=args.extra_data,
                      preset=args.preset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      action_weight=args.action_weight, video_weight=args.video_weight,
                      ema_decay=args.ema_decay, warmup=args.warmup,
                      seed=args.seed, device=args.device, threads=parse_threads(args.threads), bf16=args.bf16,
                      eval_every=args.eval_every, ckpt_every=args.ckpt_every, keep_every=args.keep_every,
                      keep_best=args.keep_best,
                      shift=args.shift, pure_noise=args.pure_noise, change_weight=args.change_weight,
                      recon_weight=args.recon_weight,
                      aux_state=args.aux_state, action_on_pure_noise=args.action_on_pure_noise, use_state=not args.no_state,
                      video_batch=args.video_batch, text_dropout=args.text_dropout,
                      resume=args.resume, progress=not args.no_progress, compile=args.compile,
                      overrides=parse_overrides(args.overrides, check=args.stage not in ("bc", "idm")) or None)
    out = train(cfg)
    print(f"trained {cfg.stage} -> {out}")
    return 0
