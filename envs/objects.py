"""MJCF snippets for the objects the tasks place on the table (colors are set per episode)."""

from __future__ import annotations

import math

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
    """A static open bowl: a base disc and a ring of ``sides`` wall slabs (inner radius ``inner_half``).

    It collides as those 7 primitives, hidden in geom group 3, and is drawn as one mesh of the same shape
    (``<name>_visual``, from :func:`bowl_mesh`): a software-rendered frame pays ~25 us per drawn geom. All
    its geoms' names start with ``name``, so a task colors the bowl by that prefix.
    """
    r, seg = _bowl_ring(inner_half, wall, sides)
    walls = []
    for i in range(sides):
        a = 2 * math.pi * i / sides
        walls.append(
            f'<geom name="{name}_wall{i}" type="box" size="{wall} {seg:.4f} {height / 2}" '
            f'pos="{r * math.cos(a):.4f} {r * math.sin(a):.4f} {height / 2}" euler="0 0 {a:.4f}" group="3"/>')
    return f"""
<body name="{name}" pos="0 0 0">
  <geom name="{name}" type="cylinder" size="{r + wall} 0.002" pos="0 0 0.002" group="3"/>
  {''.join(walls)}
  <geom name="{name}_visual" type="mesh" mesh="{name}_visual" rgba="1 1 1 1" contype="0" conaffinity="0"/>
</body>"""


def bowl_mesh(name: str, inner_half: float = BOWL_INNER, wall: float = 0.005, height: float = 0.03, sides: int = 6,
              slices: int = 12) -> str:
    """The ``<mesh>`` asset that draws :func:`bowl` ``name``: its walls and a ``slices``-gon base, in one mesh."""
    r, seg = _bowl_ring(inner_half, wall, sides)
    vertices: list[tuple[float, float, float]] = []
    faces: list[tuple[int, int, int]] = []

    def prism(outline: list[tuple[float, float]], z0: float, z1: float) -> None:
        """A closed prism over a convex, counter-clockwise ``outline``; each face its own vertices, so flat-shaded."""
        n = len(outline)
        quads = [[(*outline[i], z0), (*outline[(i + 1) % n], z0), (*outline[(i + 1) % n], z1), (*outline[i], z1)]
                 for i in range(n)]
        for polygon in [*quads, [(x, y, z1) for x, y in outline], [(x, y, z0) for x, y in reversed(outline)]]:
            start = len(vertices)
            vertices.extend(polygon)
            faces.extend((start, start + k, start + k + 1) for k in range(1, len(polygon) - 1))

    base_r = r + wall
    prism([(base_r * math.cos(2 * math.pi * k / slices), base_r * math.sin(2 * math.pi * k / slices))
           for k in range(slices)], 0.0, 0.004)
    for i in range(sides):
        a = 2 * math.pi * i / sides
        c, s = math.cos(a), math.sin(a)
        corners = [(-wall, -seg), (wall, -seg), (wall, seg), (-wall, seg)]  # the slab in its own frame
        prism([(r * c + x * c - y * s, r * s + x * s + y * c) for x, y in corners], 0.0, height)
    vertex = " ".join(f"{v:.5f}" for xyz in vertices for v in xyz)
    face = " ".join(str(i) for tri in faces for i in tri)
    return f'<mesh name="{name}_visual" vertex="{vertex}" face="{face}"/>'


def _bowl_ring(inner_half: float, wall: float, sides: int) -> tuple[float, float]:
    """Radius of the wall slabs' centres and the slabs' half-length (m): neighbouring slabs overlap at the corners."""
    r = inner_half + wall
    return r, 2 * r * math.tan(math.pi / sides) / 2 + wall
