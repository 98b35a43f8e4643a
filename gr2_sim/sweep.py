"""``gr2-sim sweep``: success rate vs number of demonstrations, with and without video pre-training, beside
the baselines that say what video buys.

For each demo count N and training seed (``--seeds``): phase 3 from scratch and phase 3 from the phase-2
checkpoint (phases 1 and 2 are trained once, when absent), and the ``--baselines`` columns (GR-1's ablation
rows and the plain image policy everybody uses):

    no-video   the same DiT from scratch trained on actions only (``--video-weight 0``: no video loss)
    bc         the plain image-BC policy (``--stage bc``, policies/bc.py)

and, with ``--labelled-video``, the other way to use the robot video (VPT's): an inverse-dynamics model
trained on the same N demos labels phase 2's action-free video (``gr2-sim label``), and phase 3 from phase 2
trains on the demos and the labelled video together (``labelled``; see gr2_sim/label.py).

Every run gets the same training budget (``--budget``): by default the same training FLOPs, so the image BC,
cheaper per sample than the DiT (about 5x against the default model with its video loss on a quarter of each
batch), trains that many times more steps of the same batch (``steps``: the same optimizer steps for every
run). The wall time each run measured (on ``--threads`` torch threads, ``--jobs`` runs side by side) is printed
beside its result. Evaluation on held-out test seeds, the same for every
run; the baselines are read out with ``head`` (they have no trained video half). Every piece is skipped when its
result exists, so a killed sweep resumes where it stopped::

    DIR/data/{synth,robot_video,demos}.hdf5     collected once
    DIR/runs/phase1, phase2                      pre-training, once
    DIR/runs/{variant}_N{n}_s{seed}/             phase 3 and baseline runs, each with eval/eval.json
    DIR/runs/idm_N{n}/, labelled.hdf5            with --labelled-video: the IDM of N demos and its labels
    DIR/results.json, results.md, success_vs_demos.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

from gr2_sim.data import VALID_EVERY
from gr2_sim.errors import UserError
from gr2_sim.io import atomic_write_text
from gr2_sim.train_config import video_batch_for

PRETRAIN = {"both": ("scratch", "pretrained"), "yes": ("pretrained",), "no": ("scratch",)}
BUDGETS = ("flops", "steps")  # what every run of a sweep gets the same of (see the module docstring)
BASELINES = ("bc", "no-video")  # see the module docstring
LABELLED = "labelled"  # --labelled-video: phase 3 from phase 2 on the demos and the IDM-labelled robot video
DIT_VARIANTS = ("scratch", "pretrained", LABELLED, "no-video")  # the columns compared with bc


def parse_baselines(text: str | list[str]) -> list[str]:
    """``"bc,no-video"`` -> ``["bc", "no-video"]``; ``"none"`` or ``""`` -> ``[]``; unknown names are a UserError."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise UserError(f"--baselines: unknown name(s) {', '.join(unknown)}; known: {', '.join(BASELINES)} "
                        f"(comma-separated, or 'none')")
    return sorted(set(names), key=names.index)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="GR2Sim/PickPlace-v0",
                   help="Gymnasium env id; 'module:ns/Id-v0' imports module first (then pass --expert for collection)")
    p.add_argument("--expert", default=None, metavar="MODULE:FUNCTION",
                   help="expert factory for collection (as for gr2-sim collect; default: the gr2-sim tasks' experts)")
    p.add_argument("--env-kwargs", default="{}",
                   help="JSON object of gym.make keyword arguments for collection and evaluation, e.g. "
                        "'{\"object_state\": true}'")
    p.add_argument("--demos", type=int, nargs="+", default=[50, 200, 1000])
    p.add_argument("--pretrain", choices=tuple(PRETRAIN), default="both")
    p.add_argument("--out", required=True)
    # defaults sized for one task's whole sweep (3 demo counts x 4 columns x 2 seeds, phases 1-2, data, 100 test
    # episodes per run) within 2.5 hours on 2 cores: two runs side by side, one thread each, 3-7 min per run
    # (docs/experiments.md#the-sweep-behind-transfer-and-the-full-lesson has the measured PickPlace sweep)
    p.add_argument("--steps", type=int, default=1500,
                   help="phase-3 steps of the DiT runs; with --budget flops the bc runs train as many FLOPs")
    p.add_argument("--budget", choices=BUDGETS, default="flops",
                   help="flops: every run gets the DiT's training FLOPs (the image BC trains more steps); "
                        "steps: every run trains --steps steps")
    p.add_argument("--jobs", type=int, default=0,
                   help="phase-3 runs trained and evaluated side by side, each on --threads threads; 0 (default): "
                        "on the CPU one per core (at --threads 1), on a GPU one")
    p.add_argument("--pretrain-steps", type=int, nargs=2, default=[1500, 750], metavar=("P1", "P2"))
    p.add_argument("--clips", type=int, default=2000, help="synthetic clips for phase 1")
    p.add_argument("--robot-episodes", type=int, default=500, help="robot video episodes for phase 2")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run")
    p.add_argument("--videos", type=int, default=2, help="rollout videos per run (first episodes)")
    p.add_argument("--mode", default="head", help="policy readout: head | denoise")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per cell (seeds 0 .. N-1)")
    p.add_argument("--labelled-video", action="store_true",
                   help="add the labelled column: an inverse-dynamics model trained on each demo count labels the "
                        "robot video (raise --robot-episodes for more of it), and phase 3 from phase 2 trains on "
                        "the demos and the labelled video (needs --pretrain both or yes)")
    p.add_argument("--idm-steps", type=int, default=3000,
                   help="training steps of each inverse-dynamics model (--labelled-video; batch --batch-size)")
    p.add_argument("--baselines", default="bc,no-video",
                   help=f"baseline columns, comma-separated: {', '.join(BASELINES)} (or 'none')")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads while training (the wall time in the table is on this many; 0: auto, as gr2-sim train)")
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--video-batch", type=int, default=None, metavar="N",
                   help="with a keypoint-readout model (the small and base presets): the video loss on the first N "
                        "samples of each phase-3 batch of the scratch and pretrained runs, as gr2-sim train "
                        "--video-batch (0: every sample; default: a quarter of the batch for such models); the "
                        "FLOPs budget counts it")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="model config override for every run, as for gr2-sim train (e.g. --set keypoints=32)")
    from gr2_sim.collect import add_env_source_arguments

    add_env_source_arguments(p)


def env_source(args) -> tuple[tuple[str, ...], str | None, str | None]:
    """``(imports, success_key, expert)`` of a sweep's arguments; absent from a Namespace built by another
    command (e.g. ``experiment transfer``): none."""
    return (tuple(getattr(args, "imports", None) or ()), getattr(args, "success_key", None),
            getattr(args, "expert", None))


def env_source_argv(args) -> list[str]:
    """The ``--import`` / ``--success-key`` / ``--expert`` options of this sweep, for ``gr2-sim collect``."""
    imports, success_key, expert = env_source(args)
    argv = [item for module in imports for item in ("--import", module)]
    if success_key:
        argv += ["--success-key", success_key]
    if expert:
        argv += ["--expert", expert]
    return argv


def demos_needed(n_train: int) -> int:
    """Episodes to collect so that the train split (all but every VALID_EVERY-th) holds ``n_train``."""
    return math.ceil(n_train * VALID_EVERY / (VALID_EVERY - 1)) + 1


def ensure_data(args, data: Path) -> dict[str, Path]:
    from gr2_sim.cli import main as gr2

    paths = {"synth": data / "synth.hdf5", "robot_video": data / "robot_video.hdf5", "demos": data / "demos.hdf5"}
    jobs = []
    if "pretrained" in PRETRAIN[args.pretrain]:
        jobs += [("synth", ["synth", "--clips", str(args.clips), "--frames", "16"]),
                 ("robot_video", ["collect", "--env", args.env, "--env-kwargs", args.env_kwargs, "--episodes",
                                  str(args.robot_episodes), "--no-actions", "--seed", "500000", *env_source_argv(args)])]
    jobs.append(("demos", ["collect", "--env", args.env, "--env-kwargs", args.env_kwargs, "--episodes",
                           str(demos_needed(max(args.demos))), "--noise", "0.05", *env_source_argv(args)]))
    for name, argv in jobs:
        done = paths[name].with_name(paths[name].name + ".done")
        if done.exists():
            continue
        start = time.perf_counter()
        code = gr2([*argv, "--out", str(paths[name]), "--workers", str(args.workers)])
        if code != 0:
            raise UserError(f"collecting {name} failed (exit {code}); see the error above, then rerun the sweep")
        atomic_write_text(done, json.dumps({"complete": True, "seconds": round(time.perf_counter() - start, 2)}))
    return paths


def _seconds_done(done: Path) -> float | None:
    """Seconds recorded in a data ``.done`` marker; None for a marker written before timings were kept."""
    try:
        return float(json.loads(done.read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def timing(out: Path, rows: list[dict]) -> dict:
    """Compute seconds of every stage of the sweep so far, each as measured when it ran (resumes included).

    ``data`` (collection), ``phase1``/``phase2`` (training wall_s over all sessions), ``labels`` (the IDMs'
    training and the labelling, with --labelled-video), ``phase3`` (sum over the DiT runs with video),
    ``baselines`` (sum over the bc and no-video runs), ``eval`` (sum over the runs), ``total`` (the sum: with
    ``--jobs`` above 1 more than the elapsed time); a stage that has not run, or whose time was not recorded,
    is None and left out of the total. The total is the lesson's cost on an otherwise idle machine only if
    nothing else ran beside it.
    """
    from gr2_sim.checkpoint import TRAINER_STATE, load_trainer_state

    def train_s(run: Path) -> float | None:
        state = run / TRAINER_STATE
        return float(load_trainer_state(run).get("wall_s", 0.0)) if state.exists() else None

    data = [_seconds_done(p) for p in sorted((out / "data").glob("*.done"))]
    parts = {"data": sum(data) if data and None not in data else None,
             "phase1": train_s(out / "runs" / "phase1"), "phase2": train_s(out / "runs" / "phase2")}
    for part, variants in (("phase3", (*PRETRAIN["both"], LABELLED)), ("baselines", BASELINES)):
        times = [train_s(Path(r["run"])) for r in rows if r["variant"] in variants]
        parts[part] = sum(times) if times and None not in times else None
    idms = sorted((out / "runs").glob("idm_N*"))  # --labelled-video: the IDMs' training and the labelling
    if idms:
        label_s = [train_s(run) for run in idms] + [_seconds_done(run / "labelled.hdf5.done") for run in idms]
        parts["labels"] = sum(label_s) if None not in label_s else None
    parts["eval"] = sum(r["wall_time_s"] for r in rows) if rows else None
    parts["total"] = sum(v for v in parts.values() if v is not None)
    return {k: None if v is None else round(v, 1) for k, v in parts.items()}


DATA_FIELDS = ("img_size", "action_dim", "state_dim")  # set by each run from its data


def pinned_model(args, out: Path) -> dict:
    """The model config every run of this sweep uses, fixed at its first start in ``DIR/model.json``.

    Scratch runs build their model from it and phase 1 too (pre-trained runs inherit it from phase 2), so a
    sweep resumed after gr2-sim's defaults changed still compares like with like. A sweep folder started
    before model.json existed takes phase 1's config. Passing other ``--set`` values to a started sweep is an
    error: use a new ``--out``.
    """
    from gr2_sim.checkpoint import load_model_config
    from gr2_sim.config import LATER_FIELDS, make_config
    from gr2_sim.train import parse_overrides

    path, phase1 = out / "model.json", out / "runs" / "phase1" / "config.json"
    asked = parse_overrides(args.overrides)
    if path.exists():  # fields added since it was pinned keep the behaviour it was started with
        pinned = {**LATER_FIELDS, **json.loads(path.read_text())}
    else:
        source = load_model_config(phase1.parent) if phase1.exists() else make_config(args.preset, **asked)
        pinned = {k: v for k, v in source.to_dict().items() if k not in DATA_FIELDS}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(pinned, indent=2))
    clash = {k: (pinned.get(k), v) for k, v in asked.items() if pinned.get(k) != v}
    if clash:
        raise UserError(f"{out} was started with a different model ({path}): "
                        + ", ".join(f"{k}={a!r} there, {b!r} asked" for k, (a, b) in clash.items())
                        + "; rerun with its settings or choose a new --out")
    return pinned


def train_if_needed(run: Path, **kwargs) -> Path:
    from gr2_sim.checkpoint import TRAINER_STATE, load_trainer_state
    from gr2_sim.train import TrainConfig, train

    state = run / TRAINER_STATE
    if state.exists() and int(load_trainer_state(run)["step"]) >= kwargs["steps"]:
        return run
    return train(TrainConfig(out=str(run), resume=state.exists(), **kwargs))


def jobs_and_threads(jobs: int, threads: int, device: str) -> tuple[int, int]:
    """(runs side by side, torch threads per run). ``jobs`` 0: one run per core on the CPU (each on ``threads``
    threads, 1 if 0), at most 8; one on a GPU (the runs would share it). ``threads`` 0 with several runs: the
    cores split between them, so they never oversubscribe the CPU."""
    from gr2_sim.device import affinity_cores, resolve_device

    cores = affinity_cores()
    if not jobs:
        jobs = 1 if resolve_device(device).type != "cpu" else max(1, min(8, cores // max(threads, 1)))
    if jobs > 1 and not threads:
        threads = max(1, cores // jobs)
    return jobs, threads


def budget_steps(args, demos: Path) -> dict[str, int]:
    """Training steps of each variant. The DiT columns train ``--steps``; under ``--budget flops`` the bc column
    trains the steps that give the scratch DiT's training FLOPs (``estimate_flops()["train_step"]`` of each
    model, built for the data's frame, state and action sizes; the same batch)."""
    steps = {v: args.steps for v in (*PRETRAIN["both"], LABELLED, *BASELINES)}
    if args.budget == "flops":
        from gr2_sim.config import ModelConfig
        from gr2_sim.data import data_dims
        from gr2_sim.model import VideoActionDiT
        from policies.bc import BCConfig, BCModel

        d = data_dims(demos)
        sizes = dict(img_size=d["image_size"], action_dim=d["action_dim"], state_dim=max(d["state_dim"], 0))
        dit = dit_train_flops(VideoActionDiT(ModelConfig(**{**args.model, **sizes})), args.video_batch, args.batch_size)
        bc = BCModel(BCConfig(**sizes)).estimate_flops()["train_step"]
        steps["bc"] = round(args.steps * dit / bc)
    return steps


def dit_train_flops(model, video_batch: int, batch_size: int) -> float:
    """Training FLOPs per sample of a phase-3 DiT run: every sample through the transformer, or with
    ``video_batch`` V of a batch B, V samples through it and all B through the keypoint readout."""
    flops = model.estimate_flops()
    if not video_batch:
        return flops["train_step"]
    v = min(video_batch, batch_size)
    return (v * flops["train_step"] + batch_size * 3 * flops["actions"]) / batch_size


def labels_path(runs: Path, n: int) -> Path:
    """Where the sweep keeps the robot video labelled by the IDM of ``n`` demos (beside that IDM's run)."""
    return runs / f"idm_N{n}" / "labelled.hdf5"


def label_video(args, paths, runs: Path, n: int) -> Path:
    """The robot video labelled by an inverse-dynamics model trained on ``n`` demos (VPT's recipe): the IDM in
    ``runs/idm_N{n}`` (it reads both frames and both states, ``next_state``), its labels in ``labelled.hdf5``
    there; each made once, so a resumed sweep reuses them."""
    from gr2_sim.cli import main as gr2

    labelled = labels_path(runs, n)
    idm, done = labelled.parent, labelled.with_name(labelled.name + ".done")
    if done.exists():
        return labelled
    train_if_needed(idm, stage="idm", data=str(paths["demos"]), demos=n, steps=args.idm_steps,
                    batch_size=args.batch_size, device=args.device, overrides={"next_state": True},
                    threads=args.threads, progress=args.jobs == 1)
    start = time.perf_counter()
    code = gr2(["label", "--idm", str(idm), "--data", str(paths["robot_video"]), "--out", str(labelled),
                "--overwrite", "--device", args.device, *(["--no-progress"] if args.jobs != 1 else [])])
    if code != 0:
        raise UserError(f"labelling the robot video with {idm} failed (exit {code}); see the error above")
    atomic_write_text(done, json.dumps({"complete": True, "seconds": round(time.perf_counter() - start, 2)}))
    return labelled


def run_cell(args, paths, runs: Path, init: str | None, variant: str, n: int, seed: int) -> dict:
    from gr2_sim.checkpoint import load_trainer_state
    from gr2_sim.evaluate import evaluate_run

    run = runs / f"{variant}_N{n}_s{seed}"
    eval_json = run / "eval" / "eval.json"
    mode = args.mode if variant in (*PRETRAIN["both"], LABELLED) else "head"  # the baselines: no video half
    if not eval_json.exists():
        steps = args.budget_steps[variant]
        common = dict(data=str(paths["demos"]), demos=n, steps=steps, batch_size=args.batch_size, seed=seed,
                      device=args.device, threads=args.threads,  # 0: the trainer's automatic rule
                      progress=args.jobs == 1, eval_every=max(250, steps // 12), ckpt_every=max(250, steps // 12))
        with torch_threads(args.threads):
            if variant == "bc":
                train_if_needed(run, stage="bc", **common)
            else:
                extra = [str(labels_path(runs, n))] if variant == LABELLED else None
                train_if_needed(run, stage="action", preset=None if init else args.preset, init=init,
                                overrides=None if init else args.model, extra_data=extra,
                                video_weight=0.0 if variant == "no-video" else 1.0,
                                video_batch=0 if variant == "no-video" else args.video_batch, **common)
        evaluate_run(run, args.env, episodes=args.episodes, mode=mode, out_dir=run / "eval", device=args.device,
                     videos=args.videos, progress=args.jobs == 1, imports=env_source(args)[0],
                     success_key=env_source(args)[1])
    result = json.loads(eval_json.read_text())["aggregated"]
    state = load_trainer_state(run)
    return {"variant": variant, "demos": n, "seed": seed, "run": str(run), "mode": mode, "budget": args.budget,
            "train_steps": int(state["step"]), "train_wall_s": round(float(state.get("wall_s", 0.0)), 1), **result}


@contextlib.contextmanager
def torch_threads(n: int):
    """``with torch_threads(n):`` runs on ``n`` torch threads (0: leave torch's setting), then restores them."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(args: argparse.Namespace) -> int:
    if any(n < 1 for n in args.demos):
        raise UserError(f"--demos must all be >= 1, got {args.demos}")
    if args.seeds < 1:
        raise UserError(f"--seeds is the number of training seeds per cell (0 .. N-1): at least 1, got {args.seeds}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: auto, one per free core), got {args.threads}")
    if args.jobs < 0:
        raise UserError(f"--jobs is the number of runs side by side: at least 1, or 0 for automatic; got {args.jobs}")
    args.jobs, args.threads = jobs_and_threads(args.jobs, args.threads, args.device)
    args.baselines = parse_baselines(args.baselines)
    if args.labelled_video and "pretrained" not in PRETRAIN[args.pretrain]:
        raise UserError("--labelled-video trains phase 3 from phase 2 on the labelled robot video; it needs "
                        "--pretrain both or yes")
    if args.idm_steps < 1:
        raise UserError(f"--idm-steps must be at least 1, got {args.idm_steps}")
    from gr2_sim.collect import parse_env_kwargs
    from gr2_sim.obs_adapter import check_env_id

    parse_env_kwargs(args.env_kwargs)  # a bad --env-kwargs fails here, before anything is collected
    check_env_id(args.env, env_source(args)[0])  # and so does an unknown env id or --import
    out = Path(args.out)
    runs = out / "runs"
    args.model = pinned_model(args, out)
    keypoints_only = not args.model.get("action_from_dit", True)
    if args.video_batch is not None and (args.video_batch < 0 or (args.video_batch and not keypoints_only)):
        raise UserError(f"--video-batch {args.video_batch}: the samples of each batch that carry the video loss, "
                        f"for a model whose action head reads the keypoints only; add --set action_from_dit=false "
                        f"(a new --out), or leave --video-batch out")
    args.video_batch = video_batch_for(args.video_batch, args.batch_size, keypoints_only)
    paths = ensure_data(args, out / "data")
    init = None
    if "pretrained" in PRETRAIN[args.pretrain]:
        p1 = train_if_needed(runs / "phase1", stage="video", data=str(paths["synth"]), preset=args.preset,
                             steps=args.pretrain_steps[0], batch_size=args.batch_size, device=args.device,
                             overrides=args.model)
        p2 = train_if_needed(runs / "phase2", stage="robot-video", data=str(paths["robot_video"]), init=str(p1),
                             steps=args.pretrain_steps[1], batch_size=args.batch_size, device=args.device)
        init = str(p2)
    args.budget_steps = budget_steps(args, paths["demos"])
    labelled = (LABELLED,) if args.labelled_video else ()
    cells = [(init if variant in ("pretrained", LABELLED) else None, variant, n, seed) for n in sorted(args.demos)
             for variant in (*PRETRAIN[args.pretrain], *labelled, *args.baselines) for seed in range(args.seeds)]
    label_ns = sorted(args.demos) if labelled else []  # an IDM and its labels per demo count, before its cells
    rows: dict[int, dict] = {}
    if args.jobs == 1:
        for n in label_ns:
            label_video(args, paths, runs, n)
        for i, cell in enumerate(cells):
            rows[i] = run_cell(args, paths, runs, *cell)
            write_results(out, [rows[k] for k in sorted(rows)], args, len(cells))
    else:  # each IDM and each cell in a process of its own; the table grows as cells finish
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        print(f"{len(cells)} runs, {args.jobs} side by side on {args.threads} thread(s) each (no progress bars while "
              f"they share the cores: a line as each starts and ends; {out / 'results.md'} grows as they finish)",
              flush=True)
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            def submit(i: int) -> None:
                pending[pool.submit(_cell_in_process, args, paths, runs, *cells[i])] = ("cell", i)

            pending = {pool.submit(_label_in_process, args, paths, runs, n): ("labels", n) for n in label_ns}
            for i, cell in enumerate(cells):
                if cell[1] != LABELLED:  # a labelled cell waits for its demo count's labels
                    submit(i)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    kind, key = pending.pop(future)
                    result = future.result()
                    if kind == "labels":
                        print(f"labels done: N={key} -> {result}", flush=True)
                        for i, cell in enumerate(cells):
                            if cell[1] == LABELLED and cell[2] == key:
                                submit(i)
                        continue
                    rows[key] = result
                    print(f"cell done: {result['variant']} N={result['demos']} seed {result['seed']}: "
                          f"{result['successes']}/{result['episodes']}", flush=True)
                    write_results(out, [rows[k] for k in sorted(rows)], args, len(cells))
    print(f"sweep complete: {out / 'results.md'}")
    return 0


def _worker_threads(args) -> None:
    """A worker process of ``--jobs`` takes its torch threads before any work."""
    import os

    import torch

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)


def _label_in_process(args, paths, runs: Path, n: int) -> Path:
    """The IDM of ``n`` demos and its labels (``label_video``) in a worker process of ``--jobs``."""
    _worker_threads(args)
    print(f"started: the inverse-dynamics model of N={n} ({args.idm_steps} steps), then its labels", flush=True)
    return label_video(args, paths, runs, n)


def _cell_in_process(args, paths, runs: Path, init: str | None, variant: str, n: int, seed: int) -> dict:
    """One cell in a worker process of ``--jobs``."""
    _worker_threads(args)
    print(f"started: {variant} N={n} seed {seed} ({args.budget_steps[variant]} steps, then {args.episodes} test "
          f"episodes)", flush=True)
    return run_cell(args, paths, runs, init, variant, n, seed)


def pooled(rows: list[dict]) -> list[dict]:
    """One cell per (demos, variant): successes and episodes summed over its seeds, with a Wilson interval."""
    from gr2_sim.stats import wilson_interval

    cells = []
    for key in sorted({(r["demos"], r["variant"]) for r in rows}, key=lambda k: (k[0], _order(k[1]))):
        rs = sorted((r for r in rows if (r["demos"], r["variant"]) == key), key=lambda r: r["seed"])
        s, e = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        cells.append({"demos": key[0], "variant": key[1], "seeds": [r["seed"] for r in rs], "successes": s,
                      "episodes": e, "success_rate": s / e, "success_ci95": list(wilson_interval(s, e)),
                      "per_seed_success": [r["success_rate"] for r in rs],
                      "train_wall_s_mean": round(sum(r.get("train_wall_s", 0.0) for r in rs) / len(rs), 1)})
    return cells


def _order(variant: str) -> int:
    order = (*PRETRAIN["both"], LABELLED, *BASELINES)
    return order.index(variant) if variant in order else len(order)


def difference(a: dict, b: dict) -> dict:
    """Pooled cell ``a`` minus pooled cell ``b``: the success-rate difference with Newcombe's 95% interval."""
    from gr2_sim.stats import newcombe_difference

    d, lo, hi = newcombe_difference(a["successes"], a["episodes"], b["successes"], b["episodes"])
    return {"difference": d, "ci95": [lo, hi], "excludes_zero": lo > 0 or hi < 0}


def minus_bc(cells: list[dict]) -> list[dict]:
    """Each DiT column minus the bc column at the same demo count (seeds pooled), with Newcombe's 95% interval."""
    by = {(c["demos"], c["variant"]): c for c in cells}
    return [{"demos": c["demos"], "variant": c["variant"], **difference(c, by[c["demos"], "bc"])}
            for c in cells if c["variant"] in DIT_VARIANTS and (c["demos"], "bc") in by]


# what each step of GR-1's ablation buys: (name, column, the column it is measured against)
STEPS = (("video prediction", "scratch", "no-video"), ("pre-training", "pretrained", "scratch"),
         ("labelled video", LABELLED, "pretrained"))


def gains(cells: list[dict]) -> list[dict]:
    """GR-1's two steps at each demo count, seeds pooled: video prediction (scratch minus no-video) and
    pre-training (pretrained minus scratch), and VPT's labelled video (labelled minus pretrained), each with
    Newcombe's 95% interval, where both columns ran."""
    by = {(c["demos"], c["variant"]): c for c in cells}
    return [{"demos": n, "step": name, "variant": a, "minus": b, **difference(by[n, a], by[n, b])}
            for n in sorted({c["demos"] for c in cells}) for name, a, b in STEPS if (n, a) in by and (n, b) in by]


def budget_text(args) -> str:
    """The training budget of every run, in words, for the table's header."""
    dit = f"{args.steps} training steps of batch {args.batch_size}"
    if args.video_batch:
        dit += f" (the video loss on {min(args.video_batch, args.batch_size)} samples of each)"
    if args.budget == "steps":
        return dit + ", the same for every run"
    bc = args.budget_steps["bc"]
    return (f"the same training FLOPs: {dit} for the DiT columns, {bc} steps of the same batch for bc "
            f"(model FLOPs per sample from each model's estimate_flops)")


LABELLED_TEXT = ("labelled (pretrained, its phase 3 also on the robot video labelled by an inverse-dynamics model "
                 "of the same demos), ")


def write_results(out: Path, rows: list[dict], args, cells_total: int | None = None) -> None:
    """results.json, results.md and the plot from the ``rows`` done so far (of ``cells_total`` cells)."""
    from gr2_sim.plots import plot_success_vs_demos

    seconds = timing(out, rows)
    cells = pooled(rows)
    diffs = minus_bc(cells)
    steps = gains(cells)
    threads = f"{args.threads} torch thread{'s' * (args.threads != 1)}" if args.threads else "automatic threads (one per free core)"
    atomic_write_text(out / "results.json", json.dumps({
        "env": args.env, "steps": args.steps, "budget": args.budget, "steps_per_variant": args.budget_steps,
        "jobs": args.jobs, "batch_size": args.batch_size, "video_batch": args.video_batch, "mode": args.mode,
        "episodes": args.episodes, "seeds": args.seeds, "baselines": args.baselines, "train_threads": args.threads,
        "rows": rows, "pooled": cells, "minus_bc": diffs, "gains": steps, "seconds": seconds}, indent=2))
    lines = [f"# Success vs demonstrations on {args.env}", "",
             f"Every run: {budget_text(args)} (the wall time each run measured, on {threads}"
             f"{f', {args.jobs} runs side by side' if args.jobs > 1 else ''}, is in the table); evaluation: {args.episodes} test episodes, `{args.mode}` "
             f"readout (`head` for the baselines); 95% Wilson intervals. Variants: scratch / pretrained (the DiT "
             f"without / with phases 1-2), {LABELLED_TEXT if args.labelled_video else ''}no-video (the DiT on actions "
             f"only), bc (the plain image-BC policy).", "",
             "| demos | variant | seed | success | 95% CI | train wall (s) | mean length "
             "| goal distance, start -> end (cm) | ended >1 cm closer | object moved |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["success_ci95"]
        goal = r.get("goal_distance")  # None for envs that do not report it, and for evaluations before it existed
        distance = f"{100 * goal['start_mean']:.1f} -> {100 * goal['end_mean']:.1f}" if goal else "-"
        closer = f"{goal['closer_fraction']:.2f}" if goal else "-"
        moved = f"{goal['moved_fraction']:.2f}" if goal and "moved_fraction" in goal else "-"
        wall = f"{r['train_wall_s']:.0f}" if r.get("train_wall_s") is not None else "-"
        lines.append(f"| {r['demos']} | {r['variant']} | {r['seed']} | {r['success_rate']:.2f} | "
                     f"[{lo:.2f}, {hi:.2f}] | {wall} | {r['mean_length']:.1f} | {distance} | {closer} | {moved} |")
    lines += ["", "Seeds pooled (successes and episodes summed over the seeds of a cell); each DiT column minus bc "
              "with Newcombe's 95% interval:", "",
              "| demos | variant | seeds | success | 95% CI | per seed | mean train wall (s) | minus bc [95% CI] |",
              "|---|---|---|---|---|---|---|---|"]
    diff_of = {(d["demos"], d["variant"]): d for d in diffs}
    for c in cells:
        lo, hi = c["success_ci95"]
        d = diff_of.get((c["demos"], c["variant"]))
        versus = f"{d['difference']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d else "-"
        lines.append(f"| {c['demos']} | {c['variant']} | {len(c['seeds'])} | {c['successes']}/{c['episodes']} = "
                     f"{c['success_rate']:.2f} | [{lo:.2f}, {hi:.2f}] | "
                     f"{', '.join(f'{p:.2f}' for p in c['per_seed_success'])} | {c['train_wall_s_mean']:.0f} | "
                     f"{versus} |")
    if steps:
        lines += ["", "What each step buys (GR-1's ablation, and VPT's labels; seeds pooled; Newcombe's 95% interval):", "",
                  "| demos | step | difference | 95% CI |", "|---|---|---|---|"]
        lines += [f"| {g['demos']} | {g['step']} ({g['variant']} minus {g['minus']}) | {g['difference']:+.2f} | "
                  f"[{g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f}] |" for g in steps]
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items() if v is not None and k != "total")
    done = "" if cells_total is None or len(rows) >= cells_total else f" so far ({len(rows)} of {cells_total} cells)"
    lines += ["", f"Compute time{done}: {seconds['total'] / 60:.1f} min ({parts}; minutes, each stage as measured "
              "when it ran: the lesson's cost on an idle machine only if nothing else ran beside it)."]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    plot_success_vs_demos(rows, out / "success_vs_demos.png")
