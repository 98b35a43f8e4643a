"""Run folders: what a training run writes, and how it is read back (never executing code from a file).

    RUN/config.json          model config, train config, stage, data file, demos used
    RUN/model.safetensors    weights: "ema.<name>" (what policies load by default) and "model.<name>" (raw)
    RUN/normalizer.json      action/state mean and std fitted on the training demos
    RUN/trainer_state.pt     everything a resume needs in ONE atomic file: step, raw and EMA weights,
                             optimizer, RNG states; tensors and plain containers only, so it loads with
                             ``torch.load(weights_only=True)``
    RUN/metrics.jsonl        one JSON object per logged step / validation
    RUN/checkpoints/step_N/  (with --keep-every) config, weights and normaliser at step N: a loadable run
    RUN/best/                the same at the validation with the lowest held-out error so far (action MSE for
                             actions, else video MSE), with best.json saying which step and value

Every file is written to a temporary name and renamed into place, so a killed run leaves the previous
checkpoint intact. ``trainer_state.pt`` holds all the state needed to resume, which is why a crash between
two of these writes can never pair weights of one step with an optimizer of another.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from gr2_sim.config import ModelConfig
from gr2_sim.dataset import Normalizer
from gr2_sim.errors import UserError
from gr2_sim.io import atomic_write_bytes, atomic_write_text

CONFIG, WEIGHTS, NORMALIZER, TRAINER_STATE, METRICS = (
    "config.json", "model.safetensors", "normalizer.json", "trainer_state.pt", "metrics.jsonl")


def save_weights(run: Path, model: torch.nn.Module, ema: torch.nn.Module, step: int) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    atomic_write_bytes(run / WEIGHTS, save(tensors, metadata={"step": str(step)}))


def _publish(tmp: Path, final: Path) -> Path:
    """Move the filled folder ``tmp`` to ``final``, replacing any previous one: ``final`` is at every instant
    either the old folder or the new one, never missing or partly written (the old one is renamed aside first)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def keep_checkpoint(run: Path, step: int) -> Path:
    """Copy the run's loadable files (config, weights, normaliser) to RUN/checkpoints/step_<step>/; the folder
    appears whole or not at all."""
    keep = run / "checkpoints"
    tmp = _fresh_dir(keep / f".step_{step:06d}.tmp")
    for name in (CONFIG, WEIGHTS, NORMALIZER):
        if (run / name).exists():
            shutil.copy2(run / name, tmp / name)
    return _publish(tmp, keep / f"step_{step:06d}")


def save_best(run: Path, model: torch.nn.Module, ema: torch.nn.Module, step: int, metric: str,
              value: float) -> Path:
    """Write the current weights with the run's config and normaliser to RUN/best/ (whole or not at all), and
    RUN/best/best.json = {"step", "metric", "value"}."""
    tmp = _fresh_dir(run / ".best.tmp")
    for name in (CONFIG, NORMALIZER):
        if (run / name).exists():
            shutil.copy2(run / name, tmp / name)
    save_weights(tmp, model, ema, step)
    atomic_write_text(tmp / "best.json", json.dumps({"step": step, "metric": metric, "value": value}))
    return _publish(tmp, run / "best")


def kept_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every kept checkpoint of a run, by step."""
    keep = Path(run) / "checkpoints"
    if not keep.is_dir():
        return []
    return sorted((int(p.name.split("_")[1]), p) for p in keep.iterdir() if p.name.startswith("step_"))


def save_trainer_state(run: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(run / TRAINER_STATE, buf.getvalue())


def save_run_files(run: Path, config: dict[str, Any], normalizer: Normalizer | None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / CONFIG, json.dumps(config, indent=2))
    if normalizer is not None:
        atomic_write_text(run / NORMALIZER, normalizer.to_json())


def _kept_alias(run: Path) -> Path:
    """RUN/checkpoints/step_2000 -> RUN/checkpoints/step_002000 (the folder's real, zero-padded name)."""
    name = run.name
    if run.is_dir() or run.parent.name != "checkpoints" or not name.startswith("step_") or not name[5:].isdigit():
        return run
    padded = run.parent / f"step_{int(name[5:]):06d}"
    return padded if padded.is_dir() else run


def check_run(run: str | Path, need_trainer_state: bool = False) -> Path:
    """The run folder as a Path, or a UserError saying what is missing."""
    run = _kept_alias(Path(run))
    if not run.is_dir():
        kept = kept_checkpoints(run.parent.parent) if run.parent.name == "checkpoints" else []
        if kept:
            raise UserError(f"run folder {run} does not exist; the kept checkpoints of {run.parent.parent} are at "
                            f"steps {', '.join(str(step) for step, _ in kept)} ({kept[0][1].name}, ...)")
        raise UserError(f"run folder {run} does not exist; train one with `gr2-sim train ... --out {run}`")
    needed = [CONFIG, WEIGHTS] + ([TRAINER_STATE] if need_trainer_state else [])
    missing = [n for n in needed if not (run / n).exists()]
    if missing:
        raise UserError(f"run folder {run} is incomplete: missing {', '.join(missing)} "
                        f"(was training killed before its first checkpoint? rerun it, or pass another run)")
    return run


def load_config(run: str | Path) -> dict[str, Any]:
    run = check_run(run)
    try:
        return json.loads((run / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{run / CONFIG} is not valid JSON ({err}); the run folder is damaged") from None


BC_COMMANDS = ("`gr2-sim eval --ckpt RUN` (the default --mode head, with --n-action-steps / --temporal-ensemble)",
               "`gr2-sim sweep --baselines bc`")


def dit_only_error(run: str | Path, what: str) -> UserError:
    """The error for a plain image-BC run given where only the video+action DiT fits."""
    return UserError(f"{run} is a plain image-BC run (--stage bc): it predicts actions only and has no video half, "
                     f"so {what} cannot use it. BC runs are taken by " + " and ".join(BC_COMMANDS)
                     + "; give a `--stage action` run here")


def check_dit_run(run: str | Path, config: dict[str, Any], what: str = "this command") -> None:
    """UserError unless ``config`` (a run's config.json) is a video+action DiT run."""
    if config.get("kind") == "bc" or config.get("stage") == "bc":
        raise dit_only_error(run, what)


def load_model_config(run: str | Path, what: str = "this command") -> ModelConfig:
    config = load_config(run)
    check_dit_run(run, config, what)
    return ModelConfig.from_dict(config["model"])


def load_weights(run: str | Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """The ``ema`` or ``model`` (raw) state dict of a run."""
    run = check_run(run)
    try:
        tensors = load_file(str(run / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{run / WEIGHTS} is not a readable safetensors file ({err}); the checkpoint is "
                        f"corrupt: retrain, or resume from {run / TRAINER_STATE} if it exists") from None
    prefix = f"{which}."
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not out:
        raise UserError(f"{run / WEIGHTS} holds no '{which}' weights")
    return out


def load_dit(run: str | Path, which: str = "ema", what: str = "this command"):
    """The run's VideoActionDiT with its ``which`` weights ("ema" or "model"), in eval mode, on the CPU; a
    UserError when the weights do not fit the run's config.json, or when it is a BC run (``what`` names the
    command in that message)."""
    from gr2_sim.model import VideoActionDiT

    model = VideoActionDiT(load_model_config(run, what))
    try:
        model.load_state_dict(load_weights(run, which))
    except RuntimeError as err:
        raise UserError(f"{run}: the weights do not match its config.json ({str(err).splitlines()[0]})") from None
    return model.eval()


def load_normalizer(run: str | Path) -> Normalizer | None:
    path = _kept_alias(Path(run)) / NORMALIZER
    return Normalizer.from_json(path.read_text()) if path.exists() else None


def load_trainer_state(run: str | Path) -> dict[str, Any]:
    path = Path(run) / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise UserError(f"{path} could not be loaded ({type(err).__name__}: {err}); "
                        f"the checkpoint is corrupt: start the run again without --resume") from None


def truncate_metrics(run: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (they belong to work lost when the run was killed)."""
    path = run / METRICS
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))
