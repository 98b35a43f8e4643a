"""``gr2-sim eval``: roll a policy out on fixed test seeds and report success with a 95 % interval.

The runner (:func:`evaluate`) sees only the policy contract (:class:`policies.base.Policy`): whatever the model,
each episode is ``reset()``, ``set_instruction(text)``, then ``select_action(obs)`` until the env ends it.
Observations reach the policy exactly as ``gr2-sim collect`` stores them (:class:`~gr2_sim.obs_adapter.ObsAdapter`:
``{"image": (S, S, 3) uint8, "state": (D,) float32}``), so any Gymnasium env evaluates like a gr2-sim one.

    gr2-sim eval --ckpt runs/p3 --env GR2Sim/PickPlace-v0 --episodes 50 --mode denoise --videos 3 --out ev/p3

writes ``ev/p3/eval.json`` = ``{"per_episode": [...], "aggregated": {...}, "config": {...}}`` and
``ev/p3/videos/episode_<seed>.mp4`` for the first ``--videos`` episodes. Episode ``i`` uses seed
``--seed-start + i`` (>= ``TEST_SEED_START``, disjoint from every data seed), so runs compare episode by episode.
Success is the last step's ``info["is_success"]``, else ``info["success"] > 0``, else ``info[--success-key]``;
``config.success_key`` in eval.json says which key was read.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tqdm import tqdm

from gr2_sim.collect import add_env_source_arguments, parse_env_kwargs
from gr2_sim.data import TEST_SEED_START
from gr2_sim.errors import UserError
from gr2_sim.io import atomic_write_text
from gr2_sim.obs_adapter import ObsAdapter, check_env_id, make_env, read_success, split_env_id
from gr2_sim.stats import percentile_summary, wilson_interval
from gr2_sim.text import words
from gr2_sim.video import EpisodeRecorder, write_video
from policies.base import Policy

POLICIES = ("gr2", "expert", "random")
# Progress below this is settling noise, not progress: an episode ends "closer" only when its goal distance fell
# by more than it, and an object "moved" only when it left its start position by more than it (metres).
PROGRESS_THRESHOLD_M = 0.01
MODES = ("head", "denoise", "idm")


def env_action(space: spaces.Space, action: np.ndarray) -> Any:
    """A policy's (A,) float action in the env's own form: a Box's shape, or a Discrete's integer."""
    if isinstance(space, spaces.Discrete):
        return int(space.start + np.clip(np.rint(action.reshape(-1)[0]), 0, space.n - 1))
    return np.asarray(action, dtype=space.dtype if space.dtype is not None else np.float32).reshape(space.shape)


def _env_name(env: gym.Env) -> str:
    return env.spec.id if env.spec else type(env.unwrapped).__name__


def rollout(env: gym.Env, adapter: ObsAdapter, policy: Policy, seed: int, recorder_for: Any = None,
            success_key: str | None = None) -> tuple[dict[str, Any], list[float], EpisodeRecorder | None]:
    """Play one episode from ``env.reset(seed=seed)``.

    Returns the episode's record (seed, success, length, return, queries, instruction, unstable, and
    _success_key: the info key success was read from, None if the env reported none; see
    :func:`~gr2_sim.obs_adapter.read_success`), the
    latencies (ms) of the ``select_action`` calls that queried the model, and the video recorder (or None).
    ``recorder_for(instruction)`` makes a recorder when this episode is filmed.
    """
    obs, info = env.reset(seed=seed)
    start_distance = _goal_distance(info)
    start_object = _object_position(info)
    object_moved, distance_change = 0.0, 0.0  # the largest displacement / |goal distance change| so far
    instruction = adapter.instruction(info)
    policy.reset()
    policy.set_instruction(instruction)
    recorder = recorder_for(instruction) if recorder_for is not None else None
    latencies: list[float] = []
    success, key = read_success(info, success_key)
    length, total_reward, unstable = 0, 0.0, False
    terminated = truncated = False
    while not (terminated or truncated):
        frame, state = adapter.frame_and_state(obs)
        before = policy.query_count
        start = time.perf_counter()
        action = np.asarray(policy.select_action({"image": frame, "state": state}), np.float32)
        elapsed_ms = 1000 * (time.perf_counter() - start)
        queried = before is None or policy.query_count != before
        if queried:
            latencies.append(elapsed_ms)
        if action.shape != (adapter.action_dim,) or not np.all(np.isfinite(action)):
            raise UserError(f"the policy returned the action {action!r}; {_env_name(env)} needs "
                            f"{adapter.action_dim} finite values")
        if recorder is not None:
            recorder.add(env.render(), policy.predicted_frames, queried, success)
        obs, reward, terminated, truncated, info = env.step(env_action(env.action_space, action))
        length += 1
        total_reward += float(reward)
        success, key = read_success(info, success_key)
        unstable = unstable or bool(info.get("unstable", False))
        distance, position = _goal_distance(info), _object_position(info)
        if start_distance is not None and distance is not None:
            distance_change = max(distance_change, abs(distance - start_distance))
        if start_object is not None and position is not None:
            object_moved = max(object_moved, float(np.linalg.norm(position - start_object)))
    if recorder is not None:
        recorder.add(env.render(), policy.predicted_frames, False, success)
    record = {"seed": seed, "success": success and not unstable, "length": length, "return": total_reward,
              "queries": len(latencies), "instruction": instruction, "unstable": unstable,
              "goal_distance_start": start_distance, "goal_distance_end": _goal_distance(info),
              "goal_distance_max_change": distance_change if start_distance is not None else None,
              "object_max_displacement": object_moved if start_object is not None else None,
              "_success_key": key}
    return record, latencies, recorder


def _goal_distance(info: dict[str, Any]) -> float | None:
    """``info["goal_distance"]`` as a finite float, else None (an env of another package may not report it)."""
    try:
        value = float(info["goal_distance"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _object_position(info: dict[str, Any]) -> np.ndarray | None:
    """``info["object_position"]`` (where the named object is) as a finite float array, else None."""
    try:
        value = np.asarray(info["object_position"], dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError):
        return None
    return value if value.size and np.all(np.isfinite(value)) else None


def goal_progress(per_episode: list[dict[str, Any]], threshold: float = PROGRESS_THRESHOLD_M) -> dict[str, Any] | None:
    """Progress where success is rare. None when the env reports no ``info["goal_distance"]``.

    Mean goal distance (m) at the start and end of the episodes; ``closer_fraction``: the share whose end
    distance is below the start by more than ``threshold`` (m, reported as ``threshold_m``: settling noise of
    1e-11 m is not progress); ``moved_fraction``: the share in which the named object left its start position
    by more than ``threshold`` at some step (``moved_source`` "object_position"), or, for an env that does not
    report where its object is, in which the goal distance changed by more than ``threshold`` at some step
    (``moved_source`` "goal_distance")."""
    rows = [e for e in per_episode if e.get("goal_distance_start") is not None
            and e.get("goal_distance_end") is not None]
    if not rows:
        return None
    start, end = np.array([(e["goal_distance_start"], e["goal_distance_end"]) for e in rows]).T
    if all(e.get("object_max_displacement") is not None for e in rows):
        source, moved = "object_position", [e["object_max_displacement"] for e in rows]
    else:
        source, moved = "goal_distance", [e.get("goal_distance_max_change") or 0.0 for e in rows]
    return {"episodes": len(rows), "start_mean": float(start.mean()), "end_mean": float(end.mean()),
            "end_median": float(np.median(end)), "threshold_m": threshold,
            "closer_fraction": float(np.mean(end < start - threshold)),
            "moved_fraction": float(np.mean(np.array(moved) > threshold)), "moved_source": source}


def aggregate(per_episode: list[dict[str, Any]], latencies_ms: list[float], wall_s: float) -> dict[str, Any]:
    """Success rate with its Wilson 95 % interval, mean lengths, query latency (ms) and throughput."""
    n = len(per_episode)
    successes = sum(e["success"] for e in per_episode)
    lengths = [e["length"] for e in per_episode]
    solved = [e["length"] for e in per_episode if e["success"]]
    low, high = wilson_interval(successes, n)
    steps = sum(lengths)
    return {"episodes": n, "successes": successes, "success_rate": successes / n, "success_ci95": [low, high],
            "mean_length": float(np.mean(lengths)),
            "mean_length_success": float(np.mean(solved)) if solved else None,
            "unstable_episodes": sum(e["unstable"] for e in per_episode),
            "query_latency_ms": percentile_summary(latencies_ms), "queries_per_step": len(latencies_ms) / max(steps, 1),
            "wall_time_s": wall_s, "env_steps_per_s": steps / max(wall_s, 1e-9),
            "by_word": success_by_word(per_episode), "goal_distance": goal_progress(per_episode)}


def success_by_word(per_episode: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Success per instruction word, for the words in some instructions but not all (colors, objects, verbs).

    ``{"orange": {"episodes": 24, "successes": 16, "success_rate": 0.67, "success_ci95": [...]}, ...}``, worst
    first: which named object or color the policy gets wrong. Empty when every instruction has the same words.
    """
    episodes_with: dict[str, list[bool]] = {}
    for e in per_episode:
        for w in set(words(e.get("instruction") or "")):
            episodes_with.setdefault(w, []).append(bool(e["success"]))
    rows = {}
    for w, results in episodes_with.items():
        if len(results) == len(per_episode):
            continue  # in every instruction: says nothing about which one fails
        k, n = sum(results), len(results)
        rows[w] = {"episodes": n, "successes": k, "success_rate": k / n, "success_ci95": list(wilson_interval(k, n))}
    return dict(sorted(rows.items(), key=lambda item: (item[1]["success_rate"], -item[1]["episodes"], item[0])))


def evaluate(policy: Policy, env: str | gym.Env, episodes: int, seed_start: int = TEST_SEED_START,
             env_kwargs: dict | None = None, videos: int = 0, out_dir: str | Path | None = None,
             progress: bool = True, success_key: str | None = None, imports: tuple[str, ...] = ()) -> dict[str, Any]:
    """Evaluate ``policy`` for ``episodes`` episodes on seeds ``seed_start, seed_start + 1, ...``.

    ``env`` is a Gymnasium id (made here with ``render_mode='rgb_array'``, frames at ``policy.image_size``) or an
    env already made (e.g. the one an ExpertPolicy reads). With ``out_dir`` the report is written to
    ``out_dir/eval.json`` (atomically) and the first ``videos`` episodes to ``out_dir/videos/``.
    ``success_key`` names the info key that reports success (default ``is_success``, else ``success``);
    ``imports`` are modules to import before making ``env`` (they register its id).
    Returns the report ``{"per_episode", "aggregated", "config"}``.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise UserError(f"--episodes must be at least 1, got {episodes}")
    if seed_start < TEST_SEED_START:
        raise UserError(f"--seed-start {seed_start} is below {TEST_SEED_START}: seeds under it are data seeds, and "
                        f"evaluating on them measures memorisation. Use --seed-start >= {TEST_SEED_START}")
    if videos < 0:
        raise UserError(f"--videos must be >= 0, got {videos}")
    if videos and out_dir is None:
        raise UserError("videos need an output folder (out_dir / --out)")
    own_env = isinstance(env, str)
    env = make_env(env, env_kwargs, image_size=policy.image_size, imports=imports) if own_env else env
    try:
        if videos and env.render_mode != "rgb_array":
            raise UserError(f"{_env_name(env)} was made with render_mode={env.render_mode!r}; videos need 'rgb_array'")
        adapter = ObsAdapter(env, policy.image_size)
        policy.check_env_compat(env)
        report = _run(policy, env, adapter, episodes, seed_start, videos, out_dir, progress, success_key)
    finally:
        if own_env:
            env.close()
    keys = [k for k in report.pop("success_keys") if k is not None]
    report["config"] = {"env_id": _env_name(env), "env_kwargs": env_kwargs or {}, "episodes": episodes,
                        "seed_start": seed_start, "videos": videos, "policy": policy.describe(),
                        "success_key": keys[0] if keys else None}
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "eval.json", json.dumps(report, indent=2))
    return report


def _run(policy: Policy, env: gym.Env, adapter: ObsAdapter, episodes: int, seed_start: int, videos: int,
         out_dir: str | Path | None, progress: bool, success_key: str | None = None) -> dict[str, Any]:
    max_steps = env.spec.max_episode_steps if env.spec else None
    per_episode: list[dict[str, Any]] = []
    latencies: list[float] = []
    keys: set[str | None] = set()
    start = time.perf_counter()
    with tqdm(total=episodes, unit="ep", desc="eval", dynamic_ncols=True, disable=not progress) as bar:
        for i in range(episodes):
            seed = seed_start + i
            film = (lambda text: EpisodeRecorder(text, max_steps)) if i < videos else None  # noqa: E731
            record, lat, recorder = rollout(env, adapter, policy, seed, film, success_key)
            key = record.pop("_success_key")
            if key is None and None not in keys:
                named = f"info[{success_key!r}]" if success_key else "info['is_success'] or info['success']"
                warnings.warn(f"{_env_name(env)} gives no {named}: its episodes count as failures"
                              + ("" if success_key else "; name the env's own key with --success-key"), stacklevel=2)
            keys.add(key)
            record["video"] = None
            if recorder is not None:
                path = write_video(Path(out_dir) / "videos" / f"episode_{seed}.mp4", recorder.frames(record["success"]))
                record["video"] = str(path.relative_to(out_dir))
            per_episode.append(record)
            latencies += lat
            bar.update(1)
            rate = sum(e["success"] for e in per_episode) / len(per_episode)
            bar.set_postfix(success=f"{rate:.0%}", len=record["length"])
    return {"per_episode": per_episode, "aggregated": aggregate(per_episode, latencies, time.perf_counter() - start),
            "success_keys": sorted(keys, key=str)}


# ------------------------------------------------------------------------------------------ building policies
def make_policy(kind: str, env_id: str, env_kwargs: dict | None = None, ckpt: str | None = None,
                imports: tuple[str, ...] = (), expert: str | None = None, **gr2_options: Any) -> tuple[Policy, gym.Env]:
    """The CLI's policy factory (the only place that names concrete policies): ``(policy, env)`` made to fit.

    ``gr2_options`` go to ``GR2Policy.from_checkpoint`` (mode, n_action_steps, ddim_steps, idm_run, ...).
    ``expert`` (``module:function``, for kind 'expert') is an expert factory, as for ``gr2-sim collect``.
    """
    if kind not in POLICIES:
        raise UserError(f"--policy {kind!r} is not one of {', '.join(POLICIES)}")
    if kind != "gr2":
        if ckpt is not None:
            raise UserError(f"--ckpt is only read by --policy gr2 (got --policy {kind})")
        from policies.scripted import ExpertPolicy, RandomPolicy

        if expert is not None and kind != "expert":
            raise UserError(f"--expert is only read by --policy expert (got --policy {kind})")
        env = make_env(env_id, env_kwargs, imports=imports)
        try:
            if kind == "random":
                return RandomPolicy(env.action_space, gr2_options.get("seed", 0)), env
            if expert is None:
                return ExpertPolicy(env), env
            from gr2_sim.collect import call_factory, load_factory

            factory = load_factory(expert)
            try:
                made = call_factory(factory, env, 0.0, gr2_options.get("seed", 0))
            except (TypeError, ValueError, KeyError, NotImplementedError, AttributeError) as err:
                raise UserError(f"--expert {expert} cannot drive {env_id}: {err}") from None
            return ExpertPolicy(env, expert=made, name=expert), env
        except BaseException:
            env.close()
            raise
    if expert is not None:
        raise UserError("--expert is only read by --policy expert (got --policy gr2)")
    if ckpt is None:
        raise UserError("--policy gr2 needs --ckpt RUN (a `gr2-sim train --stage action` or `--stage bc` run folder)")
    from gr2_sim import checkpoint

    if checkpoint.load_config(ckpt).get("kind") == "bc":
        policy = bc_policy(ckpt, **gr2_options)
    else:
        from policies.gr2 import GR2Policy

        policy = GR2Policy.from_checkpoint(ckpt, **gr2_options)
    env = make_env(env_id, env_kwargs, image_size=policy.image_size, imports=imports)  # frames as trained on
    try:
        policy.attach_env(env)
    except BaseException:
        env.close()
        raise
    return policy, env


def bc_policy(ckpt: str, mode: str = "head", idm_run: str | None = None, n_action_steps: int | None = None,
              temporal_ensemble: float | None = None, device: str = "auto", num_threads: int | None = None,
              **ignored: Any) -> Policy:
    """A ``--stage bc`` run as a policy; its one readout is ``head`` (DDIM steps and seed do not apply)."""
    from gr2_sim.checkpoint import dit_only_error
    from policies.bc import BCPolicy

    if mode != "head":
        raise dit_only_error(ckpt, f"--mode {mode}")
    if idm_run is not None:
        raise dit_only_error(ckpt, "--idm")
    return BCPolicy.from_checkpoint(ckpt, n_action_steps=n_action_steps, temporal_ensemble=temporal_ensemble,
                                    device=device, num_threads=num_threads)


def trained_env_kwargs(ckpt: str | Path, env_id: str, given: dict | None, say: bool = True) -> dict:
    """The env kwargs to evaluate a run with: ``given`` if any, else those of the data it was trained on.

    A run trained on e.g. ``object_state=True`` observations needs them again; they apply only when ``env_id``
    is the run's own env (another env's kwargs may not exist there)."""
    if given is not None:
        return given
    from gr2_sim import checkpoint

    config = checkpoint.load_config(ckpt)
    kwargs = config.get("env_kwargs") or {}
    same_env = split_env_id(str(config.get("env_id")))[1] == split_env_id(env_id)[1]  # with or without "module:"
    if not kwargs or not same_env:
        return {}
    if say:
        print(f"env kwargs {json.dumps(kwargs)}: the ones {ckpt} was trained with (--env-kwargs overrides them)")
    return dict(kwargs)


def evaluate_run(run_dir: str | Path, env_id: str, episodes: int, mode: str = "head",
                 out_dir: str | Path | None = None, env_kwargs: dict | None = None, videos: int = 0,
                 seed_start: int = TEST_SEED_START, progress: bool = False, imports: tuple[str, ...] = (),
                 success_key: str | None = None, **policy_options: Any) -> dict[str, Any]:
    """Evaluate one run folder (for sweeps): the ``aggregated`` dict of :func:`evaluate`.

    ``policy_options``: n_action_steps, ddim_steps, temporal_ensemble, device, idm_run, seed.
    """
    threads = torch.get_num_threads()  # loading a policy tunes torch's threads for batch-1 inference
    env_kwargs = trained_env_kwargs(run_dir, env_id, env_kwargs, say=False)
    policy, env = make_policy("gr2", env_id, env_kwargs, ckpt=str(run_dir), imports=imports, mode=mode,
                              **policy_options)
    try:
        report = evaluate(policy, env, episodes, seed_start, env_kwargs, videos, out_dir, progress, success_key)
    finally:
        env.close()
        torch.set_num_threads(threads)  # a sweep trains again in this process: give training its threads back
    return report["aggregated"]


# ------------------------------------------------------------------------------------------ the command
def add_arguments(p) -> None:
    p.add_argument("--ckpt", default=None,
                   help="run folder of a `gr2-sim train --stage action` (DiT) or `--stage bc` (image BC) run")
    p.add_argument("--env", required=True,
                   help="Gymnasium env id, e.g. GR2Sim/Reach-v0; any registered id works, and 'module:ns/Id-v0' "
                        "imports module first")
    p.add_argument("--episodes", type=int, required=True, help="test episodes")
    p.add_argument("--out", required=True, help="output folder: eval.json and videos/")
    p.add_argument("--policy", default="gr2", choices=POLICIES, help="gr2 (default), or the expert / random baselines")
    p.add_argument("--mode", default="head", choices=MODES,
                   help="action readout: head (1 pass), denoise (DDIM then head), idm (DDIM then --idm)")
    p.add_argument("--idm", default=None, help="inverse-dynamics run folder (--mode idm)")
    p.add_argument("--n-action-steps", type=int, default=None, help="actions executed per query (default: T)")
    p.add_argument("--ddim-steps", type=int, default=10, help="DDIM steps for --mode denoise / idm")
    p.add_argument("--temporal-ensemble", type=float, default=None, metavar="M",
                   help="ACT temporal ensembling with coefficient M (queries every step)")
    p.add_argument("--videos", type=int, default=0, help="film the first K episodes (default 0)")
    p.add_argument("--env-kwargs", default=None,
                   help="JSON object of gym.make keyword arguments (default: the ones the run's data was collected "
                        "with, when --env is the run's env; else none)")
    p.add_argument("--seed-start", type=int, default=TEST_SEED_START, help="episode i uses seed SEED_START + i")
    p.add_argument("--seed", type=int, default=0, help="policy sampling seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", default="auto", metavar="N",
                   help="CPU threads for the policy's queries (default auto: OMP_NUM_THREADS if set, else one per free "
                        "core, at most half the cores: the simulator and renderer need the rest)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--expert", default=None, metavar="MODULE:FUNCTION",
                   help="--policy expert: the expert factory, as for gr2-sim collect (default: the gr2-sim tasks' own)")
    add_env_source_arguments(p)


def run(args) -> int:
    if args.episodes < 1:  # before loading anything
        raise UserError(f"--episodes must be at least 1, got {args.episodes}")
    if args.seed_start < TEST_SEED_START:
        raise UserError(f"--seed-start {args.seed_start} is below {TEST_SEED_START}, among the data seeds; "
                        f"use --seed-start >= {TEST_SEED_START}")
    check_env_id(args.env, args.imports)
    env_kwargs = None if args.env_kwargs is None else parse_env_kwargs(args.env_kwargs)
    if args.policy == "gr2" and args.ckpt is not None:
        env_kwargs = trained_env_kwargs(args.ckpt, args.env, env_kwargs)
    options: dict[str, Any] = {"seed": args.seed}
    if args.policy == "gr2":
        from gr2_sim.device import auto_threads, parse_threads
        from policies.gr2 import default_threads

        threads = parse_threads(args.threads)
        threads, why = (threads, "--threads") if threads else auto_threads(limit=default_threads())
        if args.device == "cpu" or not torch.cuda.is_available():
            print(f"threads: {threads} ({why})", flush=True)
        options.update(num_threads=threads, mode=args.mode, n_action_steps=args.n_action_steps,
                       ddim_steps=args.ddim_steps, temporal_ensemble=args.temporal_ensemble, device=args.device,
                       idm_run=args.idm)
    policy, env = make_policy(args.policy, args.env, env_kwargs, ckpt=args.ckpt, imports=tuple(args.imports),
                              expert=args.expert, **options)
    try:
        report = evaluate(policy, env, args.episodes, args.seed_start, env_kwargs, args.videos, args.out,
                          progress=not args.no_progress, success_key=args.success_key)
    finally:
        env.close()
    agg = report["aggregated"]
    low, high = agg["success_ci95"]
    lat = agg["query_latency_ms"]
    latency = f"query latency median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat["n"] else "no queries"
    print(f"{report['config']['env_id']}: success {agg['successes']}/{agg['episodes']} = {agg['success_rate']:.0%} "
          f"(95% CI {low:.0%}-{high:.0%}), mean length {agg['mean_length']:.1f}, {latency} -> {Path(args.out) / 'eval.json'}")
    if agg["by_word"]:
        worst = list(agg["by_word"].items())[:6]
        print("success by instruction word, worst first: "
              + ", ".join(f"{w} {r['successes']}/{r['episodes']}" for w, r in worst))
    if agg["goal_distance"]:
        g = agg["goal_distance"]
        cm = f"{100 * g['threshold_m']:g} cm"
        moved = "the named object moved" if g["moved_source"] == "object_position" else "the goal distance changed"
        print(f"goal distance: {100 * g['start_mean']:.1f} cm at the start, {100 * g['end_mean']:.1f} cm at the end "
              f"(median {100 * g['end_median']:.1f} cm); {g['closer_fraction']:.0%} of episodes ended more than {cm} "
              f"closer; {moved} by more than {cm} in {g['moved_fraction']:.0%}")
    return 0
