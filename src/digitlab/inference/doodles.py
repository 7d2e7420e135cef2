"""Quick doodles as stroke programs: each takes a seeded generator and returns the polylines a person
would draw for it (coordinates in a unit box, y downwards), proportions drawn at random.

Shapes that a hand draws like a digit are left out on purpose: a lone circle (0), a snowman (8), a
straight line (1), a hook (7).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Polyline = np.ndarray  # (points, 2) float32, x then y


def _arc(cx, cy, rx, ry, start=0.0, end=360.0, steps=24) -> Polyline:
    angles = np.radians(np.linspace(start, end, steps))
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1).astype(np.float32)


def _line(*points) -> Polyline:
    return np.asarray(points, np.float32)


def house(rng) -> list[Polyline]:
    roof = rng.uniform(0.25, 0.45)
    door = rng.uniform(0.12, 0.2)
    return [
        _line((0, roof), (0, 1), (1, 1), (1, roof), (0, roof)),
        _line((-0.05, roof), (0.5, 0), (1.05, roof)),
        _line((0.5 - door, 1), (0.5 - door, 0.65), (0.5 + door, 0.65), (0.5 + door, 1)),
    ]


def star(rng) -> list[Polyline]:
    turn = rng.uniform(0, 2 * math.pi / 5)
    points = [
        (0.5 + 0.5 * math.cos(turn + k * 4 * math.pi / 5), 0.5 + 0.5 * math.sin(turn + k * 4 * math.pi / 5))
        for k in range(6)
    ]
    return [_line(*points)]


def sun(rng) -> list[Polyline]:
    rays = int(rng.integers(6, 11))
    strokes = [_arc(0.5, 0.5, 0.22, 0.22)]
    for k in range(rays):
        angle = 2 * math.pi * k / rays
        strokes.append(
            _line(
                (0.5 + 0.3 * math.cos(angle), 0.5 + 0.3 * math.sin(angle)),
                (0.5 + 0.5 * math.cos(angle), 0.5 + 0.5 * math.sin(angle)),
            )
        )
    return strokes


def face(rng) -> list[Polyline]:
    smile = rng.uniform(20, 50)
    return [
        _arc(0.5, 0.5, 0.5, rng.uniform(0.45, 0.55)),
        _arc(0.33, 0.38, 0.05, 0.05),
        _arc(0.67, 0.38, 0.05, 0.05),
        _arc(0.5, 0.55, 0.25, 0.18, smile, 180 - smile, 12),
    ]


def tree(rng) -> list[Polyline]:
    trunk = rng.uniform(0.08, 0.15)
    return [
        _line((0.5 - trunk, 1), (0.5 - trunk, 0.6), (0.5 + trunk, 0.6), (0.5 + trunk, 1)),
        _line((0.5 - trunk, 0.6), (0.05, 0.6), (0.5, 0), (0.95, 0.6), (0.5 + trunk, 0.6)),
    ]


def fish(rng) -> list[Polyline]:
    tail = rng.uniform(0.2, 0.3)
    return [
        _arc(0.4, 0.5, 0.4, rng.uniform(0.2, 0.3), -150, 150),
        _line((0.75, 0.35), (0.75 + tail, 0.2), (0.75 + tail, 0.8), (0.75, 0.65)),
        _arc(0.2, 0.45, 0.03, 0.03),
    ]


def heart(rng) -> list[Polyline]:
    t = np.linspace(0, 2 * math.pi, 40)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [np.stack([x, y * rng.uniform(0.8, 1.1)], 1).astype(np.float32)]


def cloud(rng) -> list[Polyline]:
    bumps = int(rng.integers(3, 6))
    strokes = [_line((0, 0.7), (1, 0.7))]
    for k in range(bumps):
        centre = (k + 0.5) / bumps
        strokes.append(_arc(centre, 0.7, 0.5 / bumps + 0.03, rng.uniform(0.2, 0.4), 180, 360, 12))
    return strokes


def spiral(rng) -> list[Polyline]:
    turns = rng.uniform(2, 3.5)
    t = np.linspace(0, turns * 2 * math.pi, 80)
    r = t / t[-1]
    return [np.stack([r * np.cos(t), r * np.sin(t)], 1).astype(np.float32)]


def zigzag(rng) -> list[Polyline]:
    teeth = int(rng.integers(4, 8))
    return [_line(*[(k / teeth, float(k % 2)) for k in range(teeth + 1)])]


def arrow(rng) -> list[Polyline]:
    head = rng.uniform(0.2, 0.35)
    return [_line((0, 0.5), (1, 0.5)), _line((1 - head, 0.5 - head), (1, 0.5), (1 - head, 0.5 + head))]


def flower(rng) -> list[Polyline]:
    petals = int(rng.integers(5, 9))
    strokes = [_arc(0.5, 0.35, 0.08, 0.08), _line((0.5, 0.5), (0.5, 1))]
    for k in range(petals):
        angle = 2 * math.pi * k / petals
        strokes.append(_arc(0.5 + 0.2 * math.cos(angle), 0.35 + 0.2 * math.sin(angle), 0.1, 0.1))
    return strokes


def cat(rng) -> list[Polyline]:
    return [
        _arc(0.5, 0.6, 0.4, 0.35),
        _line((0.15, 0.45), (0.2, 0.05), (0.38, 0.28)),
        _line((0.85, 0.45), (0.8, 0.05), (0.62, 0.28)),
        _line((0.05, 0.65), (0.35, 0.68)),
        _line((0.95, 0.65), (0.65, 0.68)),
        _arc(0.38, 0.52, 0.04, 0.04),
        _arc(0.62, 0.52, 0.04, 0.04),
    ]


def car(rng) -> list[Polyline]:
    roof = rng.uniform(0.15, 0.3)
    return [
        _line(
            (0, 0.75), (0, 0.5), (0.25, 0.45), (0.35, roof), (0.7, roof), (0.8, 0.45), (1, 0.5), (1, 0.75), (0, 0.75)
        ),
        _arc(0.25, 0.8, 0.1, 0.1),
        _arc(0.75, 0.8, 0.1, 0.1),
    ]


def umbrella(rng) -> list[Polyline]:
    return [
        _arc(0.5, 0.45, 0.5, 0.4, 180, 360),
        _line((0, 0.45), (1, 0.45)),
        _line((0.5, 0.45), (0.5, 0.95)),
        _arc(0.58, 0.95, 0.08, 0.06, 0, 180, 8),
    ]


def envelope(rng) -> list[Polyline]:
    tall = rng.uniform(0.5, 0.75)
    return [_line((0, 0), (1, 0), (1, tall), (0, tall), (0, 0)), _line((0, 0), (0.5, tall * 0.6), (1, 0))]


def cup(rng) -> list[Polyline]:
    return [_line((0.1, 0.1), (0.2, 1), (0.7, 1), (0.8, 0.1)), _arc(0.85, 0.5, 0.15, 0.2, -90, 90, 10)]


def ladder(rng) -> list[Polyline]:
    rungs = int(rng.integers(3, 6))
    strokes = [_line((0.2, 0), (0.2, 1)), _line((0.8, 0), (0.8, 1))]
    strokes += [_line((0.2, (k + 0.5) / rungs), (0.8, (k + 0.5) / rungs)) for k in range(rungs)]
    return strokes


def grid(rng) -> list[Polyline]:
    lines = int(rng.integers(3, 5))
    strokes = [_line((k / (lines - 1), 0), (k / (lines - 1), 1)) for k in range(lines)]
    return strokes + [_line((0, k / (lines - 1)), (1, k / (lines - 1))) for k in range(lines)]


def triangle(rng) -> list[Polyline]:
    tip = rng.uniform(0.2, 0.8)
    return [_line((0, 1), (tip, 0), (1, 1), (0, 1))]


def square_box(rng) -> list[Polyline]:
    wide = rng.uniform(0.6, 1.0)
    return [_line((0, 0), (wide, 0), (wide, 1), (0, 1), (0, 0)), _line((0, 0), (wide, 1)), _line((wide, 0), (0, 1))]


def mountains(rng) -> list[Polyline]:
    peaks = int(rng.integers(2, 4))
    points: list[tuple[float, float]] = [(0.0, 1.0)]
    for k in range(peaks):
        points += [((k + 0.5) / peaks, rng.uniform(0, 0.4)), ((k + 1) / peaks, rng.uniform(0.6, 1))]
    return [_line(*points)]


def bolt(rng) -> list[Polyline]:
    return [_line((0.6, 0), (0.2, 0.55), (0.55, 0.5), (0.3, 1), (0.85, 0.4), (0.5, 0.45), (0.8, 0))]


def key(rng) -> list[Polyline]:
    return [_arc(0.2, 0.5, 0.18, 0.18), _line((0.38, 0.5), (1, 0.5), (1, 0.7)), _line((0.8, 0.5), (0.8, 0.68))]


def glasses(rng) -> list[Polyline]:
    return [
        _arc(0.22, 0.5, 0.2, 0.15),
        _arc(0.78, 0.5, 0.2, 0.15),
        _arc(0.5, 0.5, 0.08, 0.06, 180, 360, 8),
        _line((0.02, 0.45), (0, 0.3)),
        _line((0.98, 0.45), (1, 0.3)),
    ]


DOODLES: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    function.__name__: function
    for function in (
        house,
        star,
        sun,
        face,
        tree,
        fish,
        heart,
        cloud,
        spiral,
        zigzag,
        arrow,
        flower,
        cat,
        car,
        umbrella,
        envelope,
        cup,
        ladder,
        grid,
        triangle,
        square_box,
        mountains,
        bolt,
        key,
        glasses,
    )
}
