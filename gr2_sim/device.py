"""Where and how torch runs: the ``--device`` rule, shared by training, evaluation and the policies."""

from __future__ import annotations

import torch

from gr2_sim.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device(name)
