"""gr2-sim: a GR-2-style video+action diffusion transformer for robot manipulation, on a laptop CPU."""

__version__ = "0.1.0"
