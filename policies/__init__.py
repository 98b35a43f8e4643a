"""Policies behind one contract (:class:`policies.base.Policy`): the GR-2 DiT, an inverse-dynamics readout,
the plain image-BC baseline, and reference policies (scripted expert, random)."""

from __future__ import annotations

from policies.base import ChunkedPolicy, Policy
from policies.scripted import ExpertPolicy, RandomPolicy


def __getattr__(name: str):
    # torch-backed policies load lazily, so `import policies` stays cheap for the scripted ones
    if name == "GR2Policy":
        from policies.gr2 import GR2Policy

        return GR2Policy
    if name in ("BCPolicy", "BCModel", "BCConfig"):
        from policies import bc

        return getattr(bc, name)
    if name in ("InverseDynamicsModel", "IDMConfig"):
        from policies import inverse_dynamics

        return getattr(inverse_dynamics, name)
    raise AttributeError(f"module 'policies' has no attribute {name!r}")


__all__ = ["BCConfig", "BCModel", "BCPolicy", "ChunkedPolicy", "ExpertPolicy", "GR2Policy", "IDMConfig", "InverseDynamicsModel", "Policy",
           "RandomPolicy"]
