"""Scenes made of textured rectangles: rooms, corridors, facades and tabletops.

Each kind places its walls, floors and boxes at plausible sizes and depths and
says where cameras may stand and what they look at, so that the camera poses
drawn by :mod:`.scenes` are ones a robot could have. A distant textured cube
encloses every scene (the backdrop), so every pixel has a finite depth.
Coordinates: world x right, y forward, z up, metres.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .textures import mip_pyramid, random_texture

KINDS = ("room", "corridor", "facade", "tabletop")
MAX_TEXELS = 512  # longest texture side; large planes tile their texture instead of stretching it


@dataclass
class Rect:
    """Planar rectangle origin + a*u + b*v, (a, b) in [0, 1]^2 (u, v orthogonal).

    ``texture`` is a uint8 (h, w) or (h, w, 3) image, or a zero-argument
    function making one of ``texture_shape``: textures are only made for
    rectangles that end up visible, which most backdrop faces and hidden box
    sides never are. It repeats ``repeat`` times along u and v; ``tint`` is
    the view-independent BGR albedo times Lambertian shading, so faces of a
    box differ in brightness like real faces under one light.
    """
    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray | Callable[[], np.ndarray]
    texture_shape: tuple[int, int] = (0, 0)  # (h, w); taken from ``texture`` when it is an array
    repeat: tuple[float, float] = (1.0, 1.0)
    tint: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    backdrop: bool = False
    normal: np.ndarray = field(init=False, repr=False)
    _levels: list[np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.origin, self.u, self.v = (np.asarray(a, np.float64) for a in (self.origin, self.u, self.v))
        n = np.cross(self.u, self.v)
        self.normal = n / np.linalg.norm(n)
        if isinstance(self.texture, np.ndarray):
            self.texture_shape = self.texture.shape[:2]

    @property
    def pyramid(self) -> list[np.ndarray]:
        if self._levels is None:
            tex = self.texture() if callable(self.texture) else self.texture
            self._levels = mip_pyramid(tex)
        return self._levels

    def corners(self) -> np.ndarray:
        o, u, v = self.origin, self.u, self.v
        return np.array([o, o + u, o + u + v, o + v])


Box3 = tuple[np.ndarray, np.ndarray]  # axis-aligned (lo, hi) corners


@dataclass
class Scene:
    """Rectangles plus where cameras may stand and look, so poses are plausible for the kind."""
    kind: str
    rects: list[Rect]
    camera0_box: Box3  # where the first camera is drawn
    free_box: Box3  # where any camera may be (inside the room, in front of the facade, ...)
    target_box: Box3  # what the first camera looks at
    obstacles: list[Box3]  # boxes cameras must stay out of


class SceneBuilder:
    """Collects rectangles; textures come from their own rng so geometry does not depend on them."""

    def __init__(self, geo: np.random.Generator, tex: np.random.Generator, textures: Sequence[np.ndarray] | None):
        self.geo, self.tex, self.textures = geo, tex, textures
        self.rects: list[Rect] = []
        self.obstacles: list[Box3] = []
        light = np.array([geo.normal(0, 0.5), geo.normal(0, 0.5), 1.0])
        self.light = light / np.linalg.norm(light)

    def plane(self, origin, u, v, tile: float | None = None, backdrop: bool = False) -> None:
        """Add one rectangle; ``tile`` (metres) repeats the texture on big planes to keep texels small."""
        origin, u, v = (np.asarray(a, np.float64) for a in (origin, u, v))
        lengths = np.array([np.linalg.norm(u), np.linalg.norm(v)])
        if lengths.min() < 1e-6:
            return
        repeat = np.maximum(1.0, lengths / tile) if tile else np.ones(2)
        density = self.tex.uniform(150, 400)  # texels per metre
        tw, th = (int(np.clip(round(s * density / 32), 1, MAX_TEXELS // 32)) * 32 for s in lengths / repeat)
        seed = int(self.tex.integers(2 ** 63))
        textures = self.textures

        def make() -> np.ndarray:  # its own seed: the same texture whichever rectangles get drawn
            return random_texture(textures, np.random.default_rng(seed), th, tw)

        shade = 0.45 + 0.55 * abs(float(np.cross(u, v) @ self.light) / (lengths[0] * lengths[1]))
        tint = (self.tex.uniform(0.7, 1.1) * self.tex.uniform(0.9, 1.1, 3) * shade).astype(np.float32)
        self.rects.append(Rect(origin, u, v, make, (th, tw), (float(repeat[0]), float(repeat[1])), tint, backdrop))

    def box(self, x: float, y: float, z0: float, size, yaw: float = 0.0, bottom: bool = False) -> None:
        """Add 5 faces (6 with ``bottom``) of a box whose bottom centre is (x, y, z0), rotated by yaw."""
        sx, sy, sz = size
        ex = np.array([np.cos(yaw), np.sin(yaw), 0.0]) * sx
        ey = np.array([-np.sin(yaw), np.cos(yaw), 0.0]) * sy
        ez = np.array([0.0, 0.0, sz])
        c = np.array([x, y, z0]) - ex / 2 - ey / 2
        faces = [(c + ez, ex, ey), (c, ex, ez), (c + ey, ex, ez), (c, ey, ez), (c + ex, ey, ez)]
        for f in faces + ([(c, ex, ey)] if bottom else []):
            self.plane(*f)
        pts = np.array([c + i * ex + j * ey + k * ez for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        self.obstacles.append((pts.min(0), pts.max(0)))

    def backdrop(self, centre, half: float) -> None:
        """A distant textured cube around everything, so every pixel has a finite depth (sky, far scenery)."""
        c = np.asarray(centre, np.float64) - half
        s = 2 * half
        ex, ey, ez = np.eye(3) * s
        for o, u, v in [(c, ex, ey), (c + ez, ex, ey), (c, ex, ez), (c + ey, ex, ez), (c, ey, ez), (c + ex, ey, ez)]:
            self.plane(o, u, v, tile=half / 3, backdrop=True)

    def scene(self, kind: str, camera0_box, free_box, target_box) -> Scene:
        boxes = [tuple(np.asarray(a, np.float64) for a in b) for b in (camera0_box, free_box, target_box)]
        return Scene(kind, self.rects, *boxes, self.obstacles)


def _room(b: SceneBuilder) -> Scene:
    g = b.geo
    w, d, h = g.uniform(4, 8), g.uniform(5, 10), g.uniform(2.5, 3.5)
    x0 = -w / 2
    b.plane((x0, 0, 0), (w, 0, 0), (0, d, 0), tile=g.uniform(1, 3))  # floor
    if g.random() < 0.6:
        b.plane((x0, 0, h), (w, 0, 0), (0, d, 0), tile=g.uniform(1, 3))  # ceiling
    for y in (0.0, d):  # front and back walls
        b.plane((x0, y, 0), (w, 0, 0), (0, 0, h), tile=g.uniform(2, 4))
    for x in (x0, -x0):  # side walls
        b.plane((x, 0, 0), (0, d, 0), (0, 0, h), tile=g.uniform(2, 4))
    for _ in range(int(g.integers(2, 6))):
        b.box(g.uniform(x0 + 0.7, -x0 - 0.7), g.uniform(0.45 * d, d - 0.7), 0.0, g.uniform(0.3, 1.2, 3),
              g.uniform(0, np.pi))
    b.backdrop((0, d / 2, 0), 60)
    return b.scene("room", ((x0 + 0.5, 0.5, 1.0), (-x0 - 0.5, 0.4 * d, 2.0)),
                   ((x0 + 0.3, 0.3, 0.4), (-x0 - 0.3, d - 0.3, h - 0.3)),
                   ((x0 + 0.5, 0.6 * d, 0.2), (-x0 - 0.5, d, 1.6)))


def _corridor(b: SceneBuilder) -> Scene:
    g = b.geo
    w, h, length = g.uniform(1.8, 3.5), g.uniform(2.4, 3.2), g.uniform(15, 30)
    x0 = -w / 2
    tile = g.uniform(1.5, 3)
    for z in (0.0, h):  # floor and ceiling
        b.plane((x0, 0, z), (w, 0, 0), (0, length, 0), tile=tile)
    for x in (x0, -x0):
        b.plane((x, 0, 0), (0, length, 0), (0, 0, h), tile=tile)
    for y in (0.0, length):
        b.plane((x0, y, 0), (w, 0, 0), (0, 0, h))
    for _ in range(int(g.integers(2, 7))):  # cabinets and pillars against the walls
        side, depth = g.choice([-1.0, 1.0]), g.uniform(0.15, 0.5)
        b.box(side * (w / 2 - depth / 2 + 0.01), g.uniform(3, length - 1), 0.0,
              (depth, g.uniform(0.4, 2.0), g.choice([g.uniform(0.6, 1.5), h - 0.01])))
    b.backdrop((0, length / 2, 0), 60)
    return b.scene("corridor", ((x0 / 2, 0.5, 1.2), (-x0 / 2, 0.3 * length, 1.8)),
                   ((x0 + 0.3, 0.3, 0.5), (-x0 - 0.3, length - 0.3, h - 0.3)),
                   ((x0, 0.3 * length + 2, 0.3), (-x0, 0.8 * length, h - 0.3)))


def _facade(b: SceneBuilder) -> Scene:
    g = b.geo
    b.plane((-40, -30, 0), (80, 0, 0), (0, 60, 0), tile=g.uniform(2, 4))  # ground
    widths = g.uniform(3, 8, int(g.integers(3, 6)))
    x, prev = -widths.sum() / 2, None
    depths = []
    for wd in widths:
        y, h = float(np.clip((prev[0] if prev else 10) + g.uniform(-2.5, 2.5), 7, 15)), g.uniform(4, 12)
        b.plane((x, y, 0), (wd, 0, 0), (0, 0, h))
        b.plane((x, y, h), (wd, 0, 0), (0, 5, 0))  # roof, seen by high cameras
        if prev:  # the step between two wall planes, as tall as the nearer one
            near_h = prev[1] if prev[0] < y else h
            b.plane((x, min(y, prev[0]), 0), (0, abs(y - prev[0]), 0), (0, 0, near_h))
        for _ in range(int(g.integers(0, 3))):  # balconies, signs, pillars
            sz = g.uniform(0.3, 2.5)
            sy = g.uniform(0.3, 1.5)
            b.box(x + g.uniform(0.5, wd - 0.5), y - sy / 2 + 0.02, g.uniform(0.0, h - sz),
                  (g.uniform(0.5, min(3, wd)), sy, sz), bottom=True)
        depths.append(y)
        prev, x = (y, h), x + wd
    half, front = widths.sum() / 2, min(depths)
    b.backdrop((0, 10, 0), 60)
    return b.scene("facade", ((-half / 2, front - 12, 1.2), (half / 2, front - 4, 5.0)),
                   ((-half - 5, front - 20, 0.8), (half + 5, front - 2.0, 10.0)),
                   ((-half / 2, front, 1.0), (half / 2, max(depths), 6.0)))


def _tabletop(b: SceneBuilder) -> Scene:
    g = b.geo
    b.plane((-5, -5, 0), (10, 0, 0), (0, 10, 0), tile=g.uniform(0.8, 2))  # floor
    if g.random() < 0.7:
        b.plane((-5, 2.5, 0), (10, 0, 0), (0, 0, 3), tile=g.uniform(1.5, 3))  # wall behind
    tx, ty, top = g.uniform(1.2, 2.4), g.uniform(0.8, 1.4), g.uniform(0.7, 0.8)
    b.box(0, 0, top - 0.04, (tx, ty, 0.04), bottom=True)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box(sx * (tx / 2 - 0.08), sy * (ty / 2 - 0.08), 0, (0.05, 0.05, top - 0.04))
    for _ in range(int(g.integers(3, 9))):
        size = (g.uniform(0.05, 0.35), g.uniform(0.05, 0.35), g.uniform(0.03, 0.4))
        b.box(g.uniform(-tx / 2 + 0.2, tx / 2 - 0.2), g.uniform(-ty / 2 + 0.2, ty / 2 - 0.2), top, size,
              g.uniform(0, np.pi))
    b.obstacles.append((np.array([-tx / 2, -ty / 2, 0]), np.array([tx / 2, ty / 2, top])))
    b.backdrop((0, 0, 0), 30)
    return b.scene("tabletop", ((-tx / 2 - 0.8, -ty / 2 - 1.3, top + 0.3), (tx / 2 + 0.8, -ty / 2 - 0.4, top + 1.0)),
                   ((-3, -3, top + 0.15), (3, 2.2, 2.2)),
                   ((-tx / 4, -ty / 4, top), (tx / 4, ty / 4, top + 0.15)))


BUILDERS: dict[str, Callable[[SceneBuilder], Scene]] = {
    "room": _room, "corridor": _corridor, "facade": _facade, "tabletop": _tabletop}


def build_scene(kind: str, geo: np.random.Generator, tex: np.random.Generator | None = None,
                textures: Sequence[np.ndarray] | None = None) -> Scene:
    """One random scene of ``kind``; pass ``tex`` to decouple texture draws from geometry draws."""
    return BUILDERS[kind](SceneBuilder(geo, geo if tex is None else tex, textures))
