"""``gr2-sim collect``: run a scripted expert in parallel worker processes and store episodes (HDF5).

Episode attempt ``i`` uses seed ``--seed + i`` for both the env reset and the expert's action noise, and
results are written in attempt order, so a command produces the same file whatever ``--workers`` is.
Workers only simulate and render; the parent is the only writer (see :mod:`gr2_sim.data` for the format
and its crash safety). Rerunning a command on a partial file resumes it: attempts already made are
skipped and collection continues until the file holds ``--episodes`` episodes.

Only successful episodes are kept unless ``--keep-failures``; an episode that ends by the time limit
without success, or by a MuJoCo instability (``info['unstable']``), is a failure. Success is read from the
last step's ``info`` (``is_success``, else ``success`` > 0, else ``--success-key``; see
:func:`gr2_sim.obs_adapter.read_success`).

Any Gymnasium env works with an expert factory for it (``--expert module:function``)::

    def make_expert(env, noise=0.0, seed=None):   # noise and seed are optional: only those it names are passed
        return expert                               # expert.reset(); expert.select_action(obs) -> action
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import multiprocessing as mp
import os
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing.connection import wait
from typing import Any

import numpy as np
from tqdm import tqdm

from gr2_sim.data import COMMIT_EVERY, TEST_SEED_START, DatasetWriter, Episode
from gr2_sim.errors import UserError
from gr2_sim.obs_adapter import ObsAdapter, check_env_id, import_modules, make_env, read_success

DEFAULT_EXPERT = "envs:make_expert"


@dataclass(frozen=True)
class CollectSpec:
    """Everything a worker needs to reproduce episode attempt ``i`` (picklable)."""

    env_id: str
    env_kwargs: dict
    expert: str  # "module:function"; function(env[, noise=][, seed=]) -> object with reset(), select_action(obs)
    noise: float  # expert action-noise standard deviation
    seed: int  # attempt i uses seed + i
    image_size: int
    store_actions: bool
    imports: tuple[str, ...] = ()  # modules imported before making the env (--import): they register its id
    success_key: str | None = None  # info key that says success (--success-key); None: is_success, else success


# ----------------------------------------------------------------------------- argument parsing helpers
def parse_env_kwargs(text: str) -> dict:
    """A JSON object of keyword arguments for ``gym.make`` (NaN and Infinity refused)."""
    def no_constants(name: str):
        raise ValueError(f"{name} is not allowed")

    try:
        kwargs = json.loads(text or "{}", parse_constant=no_constants)
    except ValueError as err:
        raise UserError(f"--env-kwargs must be a JSON object like '{{\"image_size\": 64}}', got {text!r} ({err})")\
            from None
    if not isinstance(kwargs, dict):
        raise UserError(f"--env-kwargs must be a JSON object (keyword arguments), got {text!r}")
    return kwargs


def load_factory(spec: str) -> Callable:
    """Import ``module:function`` (an expert factory: see :func:`call_factory` for how it is called)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"--expert must be 'module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"--expert {spec!r}: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"--expert {spec!r}: {module_name} has no function {attr!r}")
    return factory


def factory_kwargs(factory: Callable, noise: float, seed: int) -> dict:
    """The keyword arguments of ``noise`` and ``seed`` that ``factory`` accepts (by name, or through ``**kwargs``)."""
    offered = {"noise": noise, "seed": seed}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature: offer both
        return offered
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    usable = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {k: v for k, v in offered.items() if k in params and params[k].kind in usable}


def call_factory(factory: Callable, env, noise: float, seed: int):
    """``factory(env, noise=noise, seed=seed)``, passing only the keywords the factory names.

    An expert factory is ``f(env)``, ``f(env, seed=None)``, ``f(env, noise=0.0, seed=None)`` or ``f(env, **kw)``:
    ``env`` is the Gymnasium env the expert will drive (wrapped; ``env.unwrapped`` is the simulator), ``noise`` the
    standard deviation of Gaussian action noise to add (``--noise``), ``seed`` the seed of that noise (the
    episode's seed). It returns an object with ``reset()`` (called at every episode start) and
    ``select_action(obs) -> action`` (an action of ``env.action_space``).
    """
    return factory(env, **factory_kwargs(factory, noise, seed))


# ----------------------------------------------------------------------------- one episode
def run_episode(env, adapter: ObsAdapter, expert, seed: int, store_actions: bool = True,
                success_key: str | None = None) -> Episode:
    """Roll out ``expert`` for one episode from ``env.reset(seed=seed)``: N actions, N + 1 frames."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    instruction = adapter.instruction(info)
    frame, state = adapter.frame_and_state(obs)
    frames, states, actions, rewards = [frame], [state], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        action = expert.select_action(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        frame, state = adapter.frame_and_state(obs)
        frames.append(frame)
        states.append(state)
        actions.append(adapter.action_array(action))
        rewards.append(float(reward))
    success = read_success(info, success_key)[0] and not info.get("unstable", False)
    dones = np.zeros(len(actions), np.uint8)
    dones[-1] = 1
    return Episode(images=np.stack(frames), states=np.stack(states),
                   actions=np.stack(actions) if store_actions else None, rewards=np.asarray(rewards, np.float32),
                   dones=dones, instruction=instruction, seed=seed, success=success)


class EpisodeRunner:
    """One process's env, adapter and expert factory; ``runner(i)`` plays episode attempt ``i``."""

    def __init__(self, spec: CollectSpec):
        self.spec = spec
        import_modules(spec.imports)  # worker processes import them too: they register the env id
        self.factory = load_factory(spec.expert)
        self.env = make_env(spec.env_id, spec.env_kwargs, spec.image_size, imports=spec.imports)
        self.adapter = ObsAdapter(self.env, spec.image_size)

    def make_expert(self, seed: int):
        try:
            return call_factory(self.factory, self.env, self.spec.noise, seed)
        except (TypeError, ValueError, KeyError, NotImplementedError, AttributeError) as err:
            raise UserError(f"--expert {self.spec.expert} cannot drive {self.spec.env_id}: {err}") from None

    def __call__(self, attempt: int) -> Episode:
        seed = self.spec.seed + attempt
        return run_episode(self.env, self.adapter, self.make_expert(seed), seed, self.spec.store_actions,
                           self.spec.success_key)

    def close(self) -> None:
        self.env.close()


# ----------------------------------------------------------------------------- ordered parallel map
_worker_runner: Any = None


def _init_worker(runner_cls, spec) -> None:
    global _worker_runner
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    parent = mp.parent_process()
    if parent is not None:  # a killed parent (kill -9) must not leave workers blocked on a full result pipe
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True).start()
    _worker_runner = runner_cls(spec)


def _exit_with_parent(sentinel) -> None:
    wait([sentinel])
    os._exit(1)


def _work(attempt: int):
    return _worker_runner(attempt)


class OrderedPool:
    """Yields ``(i, runner_cls(spec)(i))`` for ``i`` in ``range(start, stop)``, in order of ``i``.

    With ``workers > 1`` the calls run in that many processes (started by a fork server, so no OpenGL state
    of the parent leaks into them), at most ``2 * workers`` ahead of the consumer; leaving the ``with`` block
    stops them at once. Workers that are still busy with attempts past the last one consumed are discarded.
    """

    def __init__(self, runner_cls, spec, workers: int, start: int, stop: int,
                 should_stop: Callable[[], bool] = lambda: False):
        self.runner_cls, self.spec, self.workers, self.start, self.stop = runner_cls, spec, workers, start, stop
        self.should_stop = should_stop  # polled between results: True ends the iteration early
        self.executor: ProcessPoolExecutor | None = None
        self.runner = None

    def __enter__(self) -> OrderedPool:
        if self.workers > 1:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([self.runner_cls.__module__, "envs"])
            self.executor = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(self.runner_cls, self.spec))
        else:
            self.runner = self.runner_cls(self.spec)
        return self

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if self.executor is None:
            for i in range(self.start, self.stop):
                if self.should_stop():
                    return
                yield i, self.runner(i)
            return
        pending: deque = deque()
        next_i = self.start
        while pending or next_i < self.stop:
            while next_i < self.stop and len(pending) < 2 * self.workers:
                pending.append((next_i, self.executor.submit(_work, next_i)))
                next_i += 1
            i, future = pending.popleft()
            while True:
                if self.should_stop():
                    return
                try:
                    result = future.result(timeout=0.1)
                    break
                except TimeoutError:
                    continue
            yield i, result

    def __exit__(self, exc_type, *exc) -> None:
        if self.executor is not None and exc_type is None:
            # a normal end: cancel the queued attempts and let the running ones finish (at most one each).
            # Terminating workers here could kill one while it writes a result, leaving the executor's
            # manager thread blocked on a half-read message and the process hanging at exit (seen after
            # `gr2-sim quickstart` had finished its work)
            self.executor.shutdown(wait=True, cancel_futures=True)
        elif self.executor is not None:
            # an error or Ctrl-C: ProcessPoolExecutor has no public "terminate"; stop queued work, then end the
            # workers ourselves
            processes = list((getattr(self.executor, "_processes", None) or {}).values())
            self.executor.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                p.terminate()
            for p in processes:
                p.join()
        if self.runner is not None and hasattr(self.runner, "close"):
            self.runner.close()


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM ask the collection loop to stop after the episode in hand.

    Raising ``KeyboardInterrupt`` straight from a handler can land inside a ``__del__`` or weakref callback,
    where Python swallows it, so the first signal only sets ``requested``; the loop checks it between
    episodes, closes the file (writing the masks) and then raises ``KeyboardInterrupt``. A second signal
    raises at once.
    """

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the command
def add_arguments(parser) -> None:
    parser.add_argument("--env", required=True,
                        help="Gymnasium env id, e.g. GR2Sim/Reach-v0; any registered id works, and 'module:ns/Id-v0' "
                             "imports module first (for ids a package registers on import)")
    parser.add_argument("--episodes", type=int, required=True, help="episodes the file should hold when done")
    parser.add_argument("--out", required=True, help="output .hdf5 file; an existing one is resumed")
    parser.add_argument("--workers", type=int, default=mp.cpu_count(), help="worker processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help=f"attempt i uses seed SEED + i (must stay < {TEST_SEED_START})")
    parser.add_argument("--noise", type=float, default=0.0, help="expert action-noise standard deviation")
    parser.add_argument("--no-actions", action="store_true", help="store robot video without action labels")
    parser.add_argument("--keep-failures", action="store_true", help="keep episodes that did not succeed")
    parser.add_argument("--env-kwargs", default="{}", help="JSON object of gym.make keyword arguments")
    parser.add_argument("--expert", default=DEFAULT_EXPERT,
                        help="expert factory 'module:function': function(env[, noise=][, seed=]) returns an object "
                             "with reset() and select_action(obs); only the keywords it names are passed "
                             f"(default {DEFAULT_EXPERT}, the gr2-sim tasks' scripted experts)")
    add_env_source_arguments(parser)
    parser.add_argument("--image-size", type=int, default=64, help="stored frame size in pixels (square)")
    parser.add_argument("--max-attempts", type=int, default=None,
                        help="give up after this many attempts in all (default: 5 * episodes + 20)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE if it was made differently")
    parser.add_argument("--commit-every", type=float, default=COMMIT_EVERY, metavar="SECONDS",
                        help="save finished episodes to FILE at least this often (a hard kill loses at most this much)")


def add_env_source_arguments(parser) -> None:
    """``--import MODULE`` (repeatable) and ``--success-key KEY``: shared by collect, eval and sweep."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE before making the env (a package that registers its env ids on import); "
                             "repeatable")
    parser.add_argument("--success-key", default=None, metavar="KEY",
                        help="info key that reports success (> 0 or true); default: info['is_success'], "
                             "else info['success']")


def warn_unused_noise(factory: Callable, spec: str, noise: float) -> None:
    if noise and "noise" not in factory_kwargs(factory, noise, 0):
        warnings.warn(f"--expert {spec} takes no 'noise' argument: --noise {noise} is not applied", stacklevel=2)


def check_common(args, count_name: str, count: int) -> None:
    """Validation shared by ``collect`` and ``synth``."""
    if count < 1:
        raise UserError(f"{count_name} must be at least 1, got {count}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.image_size < 8:
        raise UserError(f"--image-size must be at least 8 pixels, got {args.image_size}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if not args.commit_every >= 0:
        raise UserError(f"--commit-every must be a number of seconds >= 0, got {args.commit_every}")


def check_seed_range(seed: int, attempts: int) -> None:
    if seed + attempts > TEST_SEED_START:
        raise UserError(f"seeds {seed}..{seed + attempts - 1} would overlap the evaluation seeds (>= {TEST_SEED_START});"
                        f" use --seed below {TEST_SEED_START - attempts}")


def run(args) -> int:
    check_common(args, "--episodes", args.episodes)
    if not math.isfinite(args.noise) or args.noise < 0:
        raise UserError(f"--noise must be a finite number >= 0, got {args.noise}")
    max_attempts = args.max_attempts or (args.episodes if args.keep_failures else 5 * args.episodes + 20)
    check_seed_range(args.seed, max_attempts)
    imports = tuple(args.imports)
    check_env_id(args.env, imports)
    spec = CollectSpec(env_id=args.env, env_kwargs=parse_env_kwargs(args.env_kwargs), expert=args.expert,
                       noise=float(args.noise), seed=args.seed, image_size=args.image_size,
                       store_actions=not args.no_actions, imports=imports, success_key=args.success_key)
    probe = EpisodeRunner(spec)  # fail here, with one clear line, on a bad env, kwargs or expert
    probe.make_expert(spec.seed)
    warn_unused_noise(probe.factory, spec.expert, spec.noise)
    probe.close()
    config = {k: v for k, v in asdict(spec).items() if k in ("expert", "noise", "seed")}
    if imports:
        config["imports"] = list(imports)
    if spec.success_key:
        config["success_key"] = spec.success_key
    config["keep_failures"] = bool(args.keep_failures)
    writer = DatasetWriter(args.out, env_id=args.env, env_kwargs=spec.env_kwargs, image_size=args.image_size,
                           kind="demos" if spec.store_actions else "robot_video", config=config,
                           overwrite=args.overwrite, commit_every=args.commit_every)
    with writer, StopSignals() as stop:
        kept_before, start = writer.total, writer.next_attempt
        if kept_before >= args.episodes:
            print(f"{args.out} already holds {kept_before} episodes (asked for {args.episodes}); nothing to do")
            return 0
        attempts = successes = steps = 0
        t0 = time.perf_counter()
        bar = tqdm(total=args.episodes, initial=kept_before, unit="ep", desc="collect", dynamic_ncols=True)
        with bar, OrderedPool(EpisodeRunner, spec, args.workers, start, max_attempts, lambda: stop.requested) as pool:
            for attempt, episode in pool:
                attempts += 1
                successes += episode.success
                if episode.success or args.keep_failures:
                    writer.append(episode, attempt)
                    steps += len(episode.rewards)
                    bar.update(1)
                else:
                    writer.record_attempt(attempt)
                bar.set_postfix(attempted=start + attempts, success=f"{successes / attempts:.0%}")
                if writer.total >= args.episodes:
                    break
        if stop.requested:
            print(f"stopped: {args.out} holds {writer.total} episodes; rerun the same command to continue")
            raise KeyboardInterrupt
        elapsed = time.perf_counter() - t0
        rate = successes / max(attempts, 1)
        print(f"{args.out}: {writer.total} episodes ({writer.total - kept_before} new from {attempts} attempts, "
              f"success rate {rate:.0%}) in {elapsed:.1f} s: {attempts / elapsed:.2f} attempts/s, "
              f"{steps / elapsed:.0f} stored steps/s")
        if writer.total < args.episodes:
            hint = "" if successes else (f"; success is read from info[{args.success_key!r}]" if args.success_key else
                                         "; success is read from info['is_success'], else info['success']: "
                                         "name the env's own key with --success-key")
            raise UserError(f"gave up after {max_attempts} attempts with {writer.total} of {args.episodes} episodes "
                            f"(success rate {rate:.0%}); check the expert, raise --max-attempts or --keep-failures"
                            + hint)
    return 0
