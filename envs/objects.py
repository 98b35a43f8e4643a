"""MJCF snippets for the objects the tasks place on the table (colors are set per episode)."""

from __future__ import annotations

CUBE_HALF = 0.02  # metres: cubes are 4 cm on a side
BOWL_INNER = 0.045  # metres: inner radius of the bowl


def cube(name: str, half: float = CUBE_HALF, mass: float = 0.05) -> str:
    """A free cube; its joint is ``<name>_joint`` and its geom ``<name>``."""
    return f"""
<body name="{name}" pos="0 0 {half}">
  <freejoint name="{name}_joint"/>
  <geom name="{name}" type="box" size="{half} {half} {half}" mass="{mass}" rgba="1 1 1 1"
        friction="0.5 0.01 0.001" condim="4"/>
</body>"""


def target_pad(name: str, radius: float = 0.035) -> str:
    """A flat colored disc on the table that objects can slide over (visual only)."""
    return f"""
<body name="{name}" pos="0 0 0">
  <geom name="{name}" type="cylinder" size="{radius} 0.001" pos="0 0 0.001" rgba="1 1 1 1"
        contype="0" conaffinity="0"/>
</body>"""


def bowl(name: str, inner_half: float = BOWL_INNER, wall: float = 0.005, height: float = 0.03, sides: int = 6) -> str:
    """A static open bowl: a base disc and a ring of ``sides`` wall slabs (inner radius ``inner_half``)."""
    import math

    walls = []
    r = inner_half + wall
    seg = 2 * r * math.tan(math.pi / sides) / 2 + wall
    for i in range(sides):
        a = 2 * math.pi * i / sides
        walls.append(
            f'<geom name="{name}_wall{i}" type="box" size="{wall} {seg:.4f} {height / 2}" '
            f'pos="{r * math.cos(a):.4f} {r * math.sin(a):.4f} {height / 2}" euler="0 0 {a:.4f}" rgba="1 1 1 1"/>')
    return f"""
<body name="{name}" pos="0 0 0">
  <geom name="{name}" type="cylinder" size="{r + wall} 0.002" pos="0 0 0.002" rgba="1 1 1 1"/>
  {''.join(walls)}
</body>"""
