"""A labelled face set the project draws itself, so the whole pipeline runs with no data at all.

Faces are painted procedurally with numpy and OpenCV: a shaded head with eyes, brows, nose, lips, ears, hair,
neck and shoulders. Each person (``PersonLook``) keeps a fixed face shape, skin tone, hair, eye colour, brows,
nose, glasses and beard across all their photos, so identity is learnable; the expression (happy: open smile
with teeth, raised cheeks, narrowed eyes; neutral: closed straight mouth) and the photo (position, scale,
rotation, yaw, lighting, background clutter, noise, blur, JPEG) vary per photo. Gender shows in several cues
at once (hair length, beard or stubble, brow weight, jaw width, lip colour), none of them certain on its own.

The faces are drawn to be found by BlazeFace, the project's real detector, with its eye keypoints on the drawn
eyes; ``tests/test_synthetic.py`` checks both.

Public functions: ``make_people``, ``render_face`` / ``render_photo``, ``render_head`` (with ``head_width``),
``backdrop``, ``composite_frame`` and ``make_synthetic_dataset``. Videos of these people are scenes of
``edgeface.eval.video``. Nothing here runs at import time.

Why one module of about 900 lines: it is one drawing, read top to bottom (palettes, a person's look, the
painter's primitives, each part of the head in painting order, then the photo around it); the parts share
the private ``_Geometry`` and ``_Painter``, and split files would only pass them back and forth.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from edgeface.core.errors import EdgefaceError
from edgeface.core.spec import EMOTIONS, GENDERS

# The original project's people come first, so demos and docs can name them; then plausible first names of
# both genders, alternating, so any prefix of the list is mixed.
_NAMES: tuple[tuple[str, str], ...] = (
    ("Jimmy", "male"), ("Maya", "female"), ("Moataz", "male"), ("Mona", "female"),
    ("Lena", "female"), ("Omar", "male"), ("Priya", "female"), ("Kenji", "male"),
    ("Sofia", "female"), ("Lucas", "male"), ("Amara", "female"), ("Tomasz", "male"),
    ("Ines", "female"), ("Diego", "male"), ("Hana", "female"), ("Kwame", "male"),
    ("Elif", "female"), ("Ravi", "male"), ("Chloe", "female"), ("Mateo", "male"),
    ("Yara", "female"), ("Jonas", "male"), ("Aiko", "female"), ("Samuel", "male"),
    ("Nadia", "female"), ("Felix", "male"), ("Zara", "female"), ("Andrei", "male"),
    ("Leila", "female"), ("Hugo", "male"), ("Mei", "female"), ("Tariq", "male"),
)

# Skin tones from light to dark (RGB), interpolated; hair and eye palettes (RGB).
_SKIN = np.array([(243, 210, 186), (232, 188, 156), (214, 163, 124), (192, 138, 98), (165, 110, 74),
                  (128, 82, 54), (96, 62, 44)], np.float32)
_HAIR = {
    "black": (28, 24, 22), "dark brown": (58, 40, 28), "brown": (98, 66, 42), "auburn": (122, 58, 34),
    "blonde": (186, 148, 92), "light blonde": (214, 186, 136), "grey": (148, 146, 142), "red": (150, 72, 38),
}
_EYES = {
    "dark brown": (58, 36, 22), "brown": (96, 60, 32), "hazel": (122, 96, 52), "green": (78, 112, 72),
    "blue": (72, 112, 156), "grey": (112, 122, 132),
}
_LIPS_FEMALE = ((178, 52, 62), (196, 86, 98), (150, 48, 60), (204, 110, 110), (160, 70, 80))
_MALE_HAIR = ("buzz", "short", "side", "curly")
_FEMALE_HAIR = ("long", "bob", "parted", "bun")
_LONG_HAIR = ("long", "bob", "parted")
# Some people wear the other gender's usual hair, so hair alone does not decide gender.
_CROSS_HAIR = {"male": ("bob", "parted"), "female": ("short", "side")}
_CROSS_RATE = 0.15

# The head is drawn on a sprite of this design size (w, h); every length below is relative to it, so a sprite
# can be drawn at any width. The shirt reaches the bottom edge, and pasting extends it downwards.
_SPRITE = (320.0, 330.0)
_FACE_W = 116.0  # face width (cheek to cheek) on a design-size sprite, for a face_width of 1


@dataclass(frozen=True)
class PersonLook:
    """What stays the same across one person's photos. Colours are RGB 0-255; shape factors are near 1."""

    name: str
    gender: str  # "male" or "female"
    skin: tuple[float, float, float]
    face_width: float
    face_length: float
    jaw: float  # 0 = narrow pointed chin, 1 = wide square jaw
    hair_color: tuple[float, float, float]
    hair_style: str  # buzz, short, side, curly (short); long, bob, parted (long); bun
    hairline: float  # forehead height factor
    eye_color: tuple[float, float, float]
    eye_spacing: float
    eye_size: float
    brow_thickness: float
    brow_arch: float
    nose_width: float
    nose_length: float
    lip_color: tuple[float, float, float]
    lip_fullness: float
    beard: str  # none, stubble, beard
    glasses: bool
    shirt_color: tuple[float, float, float]


class Sprite(NamedTuple):
    """A drawn head and shoulders, ready to paste: colour, coverage, and where the face is (sprite pixels)."""

    rgb: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    eyes: tuple[tuple[float, float], tuple[float, float]]  # image-left eye, image-right eye
    box: tuple[float, float, float, float]  # the face, x0, y0, x1, y1: cheek to cheek, brows to chin


class Photo(NamedTuple):
    """One synthetic photo and where its face is, in image pixels."""

    image: np.ndarray  # (h, w, 3) RGB uint8
    eyes: tuple[tuple[float, float], tuple[float, float]]
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 around the (possibly rotated) face


# === People ================================================================================================

def _mix(palette: np.ndarray, t: float) -> tuple[float, float, float]:
    """A colour at position t in [0, 1] along a palette of colours."""
    pos = float(np.clip(t, 0.0, 1.0)) * (len(palette) - 1)
    i = min(int(pos), len(palette) - 2)
    colour = palette[i] * (1 - (pos - i)) + palette[i + 1] * (pos - i)
    return tuple(float(c) for c in colour)  # type: ignore[return-value]


def _sample_look(name: str, gender: str, rng: np.random.Generator, skin_t: float, style_index: int
                 ) -> PersonLook:
    male = gender == "male"
    skin = _mix(_SKIN, skin_t)
    # Hair colour depends loosely on skin tone: dark skin gets dark hair, light skin any colour.
    hair_names = list(_HAIR)
    light_skin = skin_t < 0.45
    weights = np.array([3, 3, 2, 1, 1, 1, 0.6, 0.6]) if light_skin else np.array([6, 4, 1, 0.3, 0, 0, 0.5, 0])
    hair_name = hair_names[rng.choice(len(hair_names), p=weights / weights.sum())]
    eye_names = list(_EYES)
    eye_w = np.array([2, 3, 2, 1, 1.5, 1]) if light_skin else np.array([5, 3, 1, 0.2, 0.1, 0.1])
    eye_name = eye_names[rng.choice(len(eye_names), p=eye_w / eye_w.sum())]
    styles = _MALE_HAIR if male else _FEMALE_HAIR
    style = styles[style_index % len(styles)]
    if rng.random() < _CROSS_RATE:
        style = str(rng.choice(_CROSS_HAIR[gender]))
    if male:
        lip = tuple(float(c) for c in np.array(skin) * np.array([0.82, 0.62, 0.6]))
        beard = str(rng.choice(["none", "stubble", "stubble", "beard"]))
    else:
        lip = _LIPS_FEMALE[int(rng.integers(len(_LIPS_FEMALE)))]
        beard = "none"
    shirt = tuple(float(c) for c in rng.integers(25, 230, size=3))
    return PersonLook(
        name=name, gender=gender, skin=skin,
        face_width=float(rng.uniform(1.0, 1.1) if male else rng.uniform(0.92, 1.02)),
        face_length=float(rng.uniform(0.96, 1.08)),
        jaw=float(np.clip(rng.normal(0.7 if male else 0.3, 0.15), 0.0, 1.0)),
        hair_color=_HAIR[hair_name], hair_style=style,
        hairline=float(rng.uniform(0.9, 1.1)),
        eye_color=_EYES[eye_name], eye_spacing=float(rng.uniform(0.93, 1.07)),
        eye_size=float(rng.uniform(0.92, 1.08)),
        brow_thickness=float(rng.uniform(1.2, 1.6) if male else rng.uniform(0.7, 1.0)),
        brow_arch=float(rng.uniform(0.1, 0.4) if male else rng.uniform(0.5, 0.9)),
        nose_width=float(rng.uniform(0.85, 1.2)), nose_length=float(rng.uniform(0.9, 1.1)),
        # lip and shirt: tuples of three (of RGB arrays), which mypy cannot count
        lip_color=lip,  # type: ignore[arg-type]
        lip_fullness=float(rng.uniform(0.8, 1.0) if male else rng.uniform(1.0, 1.25)),
        beard=beard, glasses=bool(rng.random() < 0.3), shirt_color=shirt,  # type: ignore[arg-type]
    )


def make_people(n: int = 8, seed: int = 0) -> list[PersonLook]:
    """``n`` distinct people: Jimmy, Maya, Moataz, Mona, then other first names, both genders mixed.

    Skin tones and hair styles are spread over the set rather than drawn independently, so even a small set
    has people who are easy to tell apart. Names repeat with a numeric suffix past the built-in list.
    """
    if n < 1:
        raise EdgefaceError(f"need at least one person, got {n}")
    rng = np.random.default_rng([seed, 7919])
    skin_ts = (rng.permutation(n) + rng.uniform(0.1, 0.9, size=n)) / n  # stratified over the tone range
    style_offset = {"male": int(rng.integers(4)), "female": int(rng.integers(4))}
    seen = {"male": 0, "female": 0}
    people = []
    for i in range(n):
        name, gender = _NAMES[i % len(_NAMES)]
        if i >= len(_NAMES):
            name = f"{name}{i // len(_NAMES) + 1}"
        style = style_offset[gender] + seen[gender]
        seen[gender] += 1
        people.append(_sample_look(name, gender, np.random.default_rng([seed, i]), float(skin_ts[i]), style))
    return people


# === Drawing helpers ========================================================================================

_SHIFT = 3  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


def _poly_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * _ONE).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    return mask.astype(np.float32) * (1.0 / 255.0)


def _ellipse_mask(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float],
                  angle: float = 0.0) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (round(centre[0] * _ONE), round(centre[1] * _ONE)),
                (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE))), angle, 0, 360, 255, -1,
                cv2.LINE_AA, _SHIFT)
    return mask.astype(np.float32) * (1.0 / 255.0)


def _polyline_mask(shape: tuple[int, int], points: np.ndarray, thickness: float) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    cv2.polylines(mask, [np.round(points * _ONE).astype(np.int32)], False, 255, max(1, round(thickness)),
                  cv2.LINE_AA, _SHIFT)
    return mask.astype(np.float32) * (1.0 / 255.0)


def _soften(mask: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma <= 0.3:
        return mask
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _blend(img: np.ndarray, mask: np.ndarray, colour: np.ndarray | Sequence[float], opacity: float = 1.0,
           light: np.ndarray | None = None) -> None:
    """Paint ``colour`` (one colour or an image), times an optional 2-D ``light`` map, where ``mask`` is."""
    # Only the mask's bounding box is touched: most parts are small, and full-canvas passes dominate the time.
    rows = np.flatnonzero(mask.max(axis=1) > 1e-3)
    if rows.size == 0:
        return
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].max(axis=0) > 1e-3)
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    colour = np.asarray(colour, np.float32)
    if colour.ndim == 3:
        colour = colour[window]
    if light is not None:
        colour = colour * light[window][..., None]
    target = img[window]
    target += (colour - target) * (mask[window] * opacity)[..., None]


def _gauss(grid: tuple[np.ndarray, np.ndarray], cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """A separable Gaussian bump of peak 1 (cheap: one outer product)."""
    xs, ys = grid
    column = np.exp(-0.5 * ((ys - cy) / sy) ** 2)
    return np.outer(column, np.exp(-0.5 * ((xs - cx) / sx) ** 2)).astype(np.float32)


def _shade(img: np.ndarray, amount: np.ndarray, where: np.ndarray | None = None) -> None:
    """Darken (amount < 0) or lighten (amount > 0) multiplicatively, in place."""
    factor = amount if where is None else amount * where
    rows = np.flatnonzero(np.abs(factor).max(axis=1) > 1e-3)
    if rows.size == 0:
        return
    window = slice(rows[0], rows[-1] + 1)
    img[window] *= (1.0 + factor[window])[..., None]


def _texture(rng: np.random.Generator, shape: tuple[int, int], cell: float,
             stretch: tuple[float, float] = (1, 1)) -> np.ndarray:
    """Smooth noise of unit spread: random values on a coarse grid, resized up (streaky when stretched)."""
    import cv2

    gh = max(2, int(shape[0] / (cell * stretch[1])))
    gw = max(2, int(shape[1] / (cell * stretch[0])))
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _curve(x0: float, x1: float, y: float, bend: float, n: int = 24, power: float = 2.0) -> np.ndarray:
    """Points along a symmetric arc from x0 to x1 whose middle sits ``bend`` above (negative: below) ``y``."""
    t = np.linspace(-1.0, 1.0, n)
    xs = (x0 + x1) / 2 + t * (x1 - x0) / 2
    ys = y - bend * (1 - np.abs(t) ** power)
    return np.stack([xs, ys], axis=1)


# === The head ===============================================================================================

class _Geometry(NamedTuple):
    """Where the parts of a face go, in sprite pixels."""

    cx: float  # centre line of the skull
    fx: float  # centre line of the features (moves with yaw)
    nose_x: float  # the nose sticks out, so it moves further with yaw
    cy: float  # face centre (y), about the lower eyelid
    a: float  # face half-width
    b: float  # face half-height
    eye_y: float
    eye_dx: float
    eye_w: float
    brow_y: float
    nose_y: float
    mouth_y: float
    chin_y: float


class _Painter:
    """The state shared by the drawing steps of one head: canvas, coverage, geometry, light and expression."""

    def __init__(self, look: PersonLook, emotion: str, rng: np.random.Generator, width: int, yaw: float,
                 light: tuple[float, float]) -> None:
        self.look, self.rng, self.yaw = look, rng, yaw
        self.s = s = width / _SPRITE[0]
        self.shape = h, w = round(_SPRITE[1] * s), round(width)
        self.grid = (np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.xs, self.ys = np.meshgrid(*self.grid)
        self.male = look.gender == "male"
        self.happy = emotion == "happy"
        self.smile = float(rng.uniform(0.7, 1.0)) if self.happy else 0.0
        a, b = _FACE_W / 2 * s * look.face_width, 80 * s * look.face_length
        cx, cy = w / 2, 125 * s
        fx = cx + yaw * 0.2 * a
        self.g = _Geometry(cx=cx, fx=fx, nose_x=fx + yaw * 0.08 * a, cy=cy, a=a, b=b, eye_y=cy - 0.12 * b,
                           eye_dx=0.43 * a * look.eye_spacing, eye_w=0.21 * a * look.eye_size,
                           brow_y=cy - 0.34 * b, nose_y=cy + 0.3 * b * look.nose_length,
                           mouth_y=cy + 0.56 * b, chin_y=cy + b)
        self.img = np.zeros((h, w, 3), np.float32)
        self.alpha = np.zeros(self.shape, np.float32)
        self.skin = np.array(look.skin, np.float32)
        self.hair = np.array(look.hair_color, np.float32)
        self.light = (light[0], light[1], float(np.sqrt(max(0.2, 1 - light[0] ** 2 - light[1] ** 2))))
        # Filled in by the drawing steps that make them, read by later ones.
        self.hair_light: np.ndarray = np.ones(self.shape, np.float32)
        self.face = np.zeros(self.shape, np.float32)
        self.shading: np.ndarray = np.ones(self.shape, np.float32)

    def lit(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        """Lambert shading of an ellipsoid (rx, ry) under the photo's light: what makes a part look round."""
        lx, ly, lz = self.light
        u = (self.xs - cx) / rx
        v = (self.ys - cy) / ry
        z = np.sqrt(np.clip(1 - u * u - v * v, 0.02, None))
        norm = np.sqrt(u * u + 0.5 * v * v + z * z)
        return np.clip((u * lx + 0.7 * v * ly + z * lz) / norm, 0, 1)

    def cover(self, mask: np.ndarray) -> None:
        """Mark a drawn part as opaque in the sprite's coverage."""
        np.maximum(self.alpha, mask, out=self.alpha)


def _face_outline(g: _Geometry, jaw: float, n: int = 96) -> np.ndarray:
    """Egg-shaped outline: round skull, cheeks, and a jaw that is wider and squarer as ``jaw`` grows."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    lower = np.clip(s, 0, None)
    # Lower half: the cheek-to-chin line narrows; a square jaw keeps its width longer, then turns sharply.
    exponent = 1.0 - 0.35 * jaw * lower
    width = np.sign(c) * np.abs(c) ** exponent * (1 - (0.28 - 0.12 * jaw) * lower ** 2)
    xs = g.cx + g.a * width
    ys = g.cy + g.b * s
    return np.stack([xs, ys], axis=1)


def _draw_back_hair_and_body(p: _Painter) -> None:
    g, s, shape, h = p.g, p.s, p.shape, p.shape[0]
    cx, cy, a, b = g.cx, g.cy, g.a, g.b
    hair_tex = 1 + 0.16 * _texture(p.rng, shape, 5 * s, (0.35, 3.0)) + 0.06 * _texture(p.rng, shape, 2 * s)
    p.hair_light = (0.55 + 0.55 * p.lit(cx, cy - 0.3 * b, 1.35 * a, 1.5 * b)) * hair_tex
    if p.look.hair_style in _LONG_HAIR:
        bottom = g.chin_y + (0.1 * b if p.look.hair_style == "bob" else 0.95 * b)
        back = np.array([[cx - 1.3 * a, cy - 0.2 * b], [cx - 1.38 * a, bottom - 0.2 * b],
                         [cx - 1.1 * a, bottom], [cx + 1.1 * a, bottom], [cx + 1.38 * a, bottom - 0.2 * b],
                         [cx + 1.3 * a, cy - 0.2 * b]])
        crown = _ellipse_mask(shape, (cx, cy - 0.25 * b), (1.3 * a, 1.2 * b))
        mask = np.maximum(_poly_mask(shape, back), crown)
        _blend(p.img, mask, p.hair * 0.8, light=p.hair_light)
        p.cover(mask)

    neck_w = (0.5 + 0.12 * p.male) * a
    shoulder_y = g.chin_y + 0.55 * b
    body = np.array([[cx + neck_w * 1.05, shoulder_y], [cx + 2.2 * a, shoulder_y + 0.3 * b],
                     [cx + 2.55 * a, h + 2], [cx - 2.55 * a, h + 2], [cx - 2.2 * a, shoulder_y + 0.3 * b],
                     [cx - neck_w * 1.05, shoulder_y]])
    neck = _poly_mask(shape, np.array([[cx - neck_w, cy + 0.4 * b], [cx + neck_w, cy + 0.4 * b],
                                       [cx + neck_w * 1.1, h + 2], [cx - neck_w * 1.1, h + 2]]))
    _blend(p.img, neck, p.skin, light=0.55 + 0.35 * p.lit(cx, shoulder_y, 2 * a, 2 * b))
    # The chin throws a shadow on the neck.
    _shade(p.img, -0.45 * _gauss(p.grid, g.fx, g.chin_y + 0.08 * b, 0.7 * a, 0.16 * b), neck)
    collar = _poly_mask(shape, np.array([[cx - neck_w * 1.1, shoulder_y - 2 * s], [cx, shoulder_y + 0.45 * b],
                                         [cx + neck_w * 1.1, shoulder_y - 2 * s]]))
    clothes = _poly_mask(shape, body) * (1 - collar)
    fold = 1 + 0.03 * _texture(p.rng, shape, 30 * s)
    _blend(p.img, clothes, np.array(p.look.shirt_color, np.float32),
           light=(0.6 + 0.5 * p.lit(cx, h, 3 * a, 2.2 * b)) * fold)
    p.cover(np.maximum(neck, clothes))


def _draw_ears(p: _Painter) -> None:
    g, yaw = p.g, p.yaw
    ear_y = (g.eye_y + g.nose_y) / 2
    for side in (-1, 1):
        visible = 1.0 - max(0.0, side * yaw) * 1.2  # the ear on the far side turns away
        if visible <= 0.2:
            continue
        ex = g.cx + side * (g.a * 0.97 - yaw * 0.1 * g.a)
        ear = _ellipse_mask(p.shape, (ex, ear_y), (0.17 * g.a * visible, 0.3 * g.b), side * 12)
        _blend(p.img, ear, p.skin * 0.82)
        inner = _ellipse_mask(p.shape, (ex + side * 0.03 * g.a, ear_y), (0.08 * g.a * visible, 0.19 * g.b),
                              side * 12)
        _blend(p.img, _soften(inner, 1.5 * p.s), p.skin * 0.55, 0.7)
        p.cover(ear)


def _draw_skin(p: _Painter) -> None:
    g, grid, shape = p.g, p.grid, p.shape
    fx, a, b = g.fx, g.a, g.b
    p.face = face = _poly_mask(shape, _face_outline(g, p.look.jaw))
    p.shading = 0.42 + 0.68 * p.lit(g.cx, g.cy - 0.05 * b, 1.05 * a, 1.1 * b)
    # Light scattered under the skin keeps shadows warm rather than grey: red fades slower than blue.
    warm = np.array([1.06, 1.0, 0.96], np.float32)
    _blend(p.img, face, p.skin * warm, light=p.shading * (1 + 0.025 * _texture(p.rng, shape, 3 * p.s)))
    _blend(p.img, face, p.skin, 0.5, light=p.shading)
    p.cover(face)

    # Relief: eye sockets, brow ridge, cheeks, nose, mouth and chin, as soft darkening and lightening.
    relief = np.zeros(shape, np.float32)
    for side in (-1, 1):
        ex = fx + side * g.eye_dx
        relief -= 0.3 * _gauss(grid, ex - side * 0.05 * a, g.eye_y - 0.02 * b, 0.2 * a, 0.1 * b)
        relief += 0.1 * _gauss(grid, ex, g.brow_y - 0.12 * b, 0.22 * a, 0.08 * b)
        cheek_y = g.nose_y - (0.06 * b if p.happy else -0.02 * b)
        relief += (0.08 + 0.1 * p.smile) * _gauss(grid, ex + side * 0.05 * a, cheek_y, 0.2 * a, 0.12 * b)
        relief -= 0.16 * _gauss(grid, g.cx + side * 0.88 * a, g.nose_y, 0.15 * a, 0.45 * b)  # cheek hollows
    nx = g.nose_x
    away = 1 if p.light[0] <= 0 else -1  # the side of the nose turned away from the light
    relief -= 0.22 * _gauss(grid, nx + away * 0.12 * a, (g.eye_y + g.nose_y) / 2, 0.05 * a, 0.22 * b)
    relief += 0.16 * _gauss(grid, nx - away * 0.03 * a, (g.eye_y + g.nose_y) / 2, 0.04 * a, 0.25 * b)
    relief += 0.18 * _gauss(grid, nx, g.nose_y - 0.04 * b, 0.08 * a, 0.06 * b)
    relief -= 0.32 * _gauss(grid, nx, g.nose_y + 0.1 * b, 0.16 * a, 0.04 * b)  # shadow under the nose
    relief -= 0.12 * _gauss(grid, fx, g.mouth_y + 0.2 * b, 0.2 * a, 0.05 * b)  # under the lower lip
    relief += 0.1 * _gauss(grid, fx, g.chin_y - 0.15 * b, 0.2 * a, 0.08 * b)
    _shade(p.img, relief, face)
    # Rosy cheeks, stronger when smiling.
    for side in (-1, 1):
        blush = _gauss(grid, fx + side * 0.5 * a, g.nose_y - 0.05 * b * p.smile, 0.18 * a, 0.1 * b) * face
        _blend(p.img, blush, np.array([200, 90, 90], np.float32), 0.12 + 0.1 * p.smile + 0.08 * (not p.male),
               light=p.shading)


def _draw_beard(p: _Painter) -> None:
    if p.look.beard == "none":
        return
    g, xs, ys, face = p.g, p.xs, p.ys, p.face
    lower = face * np.clip((ys - (g.nose_y + 0.02 * g.b)) / (0.15 * g.b), 0, 1)
    cheek_line = np.clip((np.abs(xs - g.fx) - 0.25 * g.a) / (0.2 * g.a), 0, 1)
    lower = lower * np.maximum(cheek_line, np.clip((ys - g.nose_y - 0.1 * g.b) / (0.1 * g.b), 0, 1))
    chin = _ellipse_mask(p.shape, (g.fx, g.chin_y - 0.1 * g.b), (0.5 * g.a, 0.35 * g.b))
    lower = np.maximum(lower, face * chin)
    if p.look.beard == "stubble":
        grain = np.clip(0.75 + 0.5 * p.rng.standard_normal(p.shape).astype(np.float32), 0, 1.4)
        shadow = p.hair * 0.35 + p.skin * 0.25 + np.array([8, 10, 16], np.float32)  # bluish, as stubble is
        _blend(p.img, _soften(lower, 2 * p.s) * grain, shadow, 0.42)
    else:
        _blend(p.img, _soften(lower, 1.2 * p.s), p.hair * 0.85, 0.9, light=p.hair_light)


def _draw_mouth(p: _Painter) -> None:
    g, grid, shape, img, xs, ys, s = p.g, p.grid, p.shape, p.img, p.xs, p.ys, p.s
    a, b, smile = g.a, g.b, p.smile
    mouth_w = (0.36 + 0.1 * smile) * a
    lips = np.array(p.look.lip_color, np.float32)
    my = g.mouth_y
    mx = g.fx + p.yaw * 0.04 * a
    full = p.look.lip_fullness
    if p.happy:
        lift = 0.09 * b * smile  # the corners rise
        open_h = (0.1 + 0.1 * smile) * b
        top = _curve(mx - mouth_w, mx + mouth_w, my - lift, -lift * 0.6, power=2.5)
        bottom = _curve(mx - mouth_w, mx + mouth_w, my - lift, -open_h - lift, power=2.2)[::-1]
        opening = np.concatenate([top, bottom])
        _blend(img, _polyline_mask(shape, opening, 0.075 * b * full), lips * 0.95, light=p.shading)
        inside = _poly_mask(shape, opening)
        _blend(img, inside, np.array([70, 22, 26], np.float32))
        # Tongue at the bottom, upper teeth filling the top half of the opening, with faint gaps.
        _blend(img, inside * _gauss(grid, mx, my + open_h * 0.8, 0.5 * mouth_w, 0.3 * open_h),
               np.array([150, 60, 62], np.float32), 0.8)
        top_y = np.interp(xs, top[:, 0], top[:, 1])
        depth = np.sqrt(np.clip(1 - ((xs - mx) / mouth_w) ** 2, 0, 1))
        teeth = inside * np.clip((top_y + 0.5 * open_h * depth - ys) / (0.02 * b), 0, 1)
        gaps = 1 - 0.25 * np.clip(np.cos((xs - mx) / (0.09 * a) * np.pi) * 4 - 3, 0, 1)
        _blend(img, teeth, np.array([238, 232, 220], np.float32), 0.95, light=p.shading * gaps)
        # Laugh lines from the nose wings to the mouth corners.
        for side in (-1, 1):
            t = np.linspace(0, 1, 12)
            fold = np.stack([mx + side * (0.28 * a + 0.22 * a * t - 0.06 * a * t * t),
                             g.nose_y + 0.02 * b + t * (my - g.nose_y + 0.02 * b - lift)], axis=1)
            _shade(img, -0.22 * _soften(_polyline_mask(shape, fold, 2.2 * s), 1.6 * s), p.face)
    else:
        upper = np.concatenate([
            _curve(mx - mouth_w, mx, my, 0.05 * b * full, 12, 1.4),
            _curve(mx, mx + mouth_w, my, 0.05 * b * full, 12, 1.4)[1:],
            _curve(mx - mouth_w, mx + mouth_w, my, 0.0)[::-1]])
        lip_bottom = _curve(mx - mouth_w * 0.95, mx + mouth_w * 0.95, my, -0.085 * b * full)
        lower_lip = np.concatenate([_curve(mx - mouth_w, mx + mouth_w, my, 0.0), lip_bottom[::-1]])
        _blend(img, _poly_mask(shape, upper), lips * 0.85, light=p.shading)
        _blend(img, _poly_mask(shape, lower_lip), lips, light=p.shading)
        # A highlight on the lower lip and the dark line where the lips meet.
        _shade(img, 0.15 * _gauss(grid, mx, my + 0.045 * b * full, 0.15 * a, 0.02 * b))
        line = _curve(mx - mouth_w * 1.02, mx + mouth_w * 1.02, my, -0.01 * b)
        _blend(img, _polyline_mask(shape, line, 1.6 * s), np.array([60, 25, 25], np.float32), 0.75)


def _draw_eyes(p: _Painter) -> tuple[tuple[float, float], tuple[float, float]]:
    """Both eyes; returns their centres (image-left first), where a detector's keypoints should land."""
    g, grid, shape, img, ys, s = p.g, p.grid, p.shape, p.img, p.ys, p.s
    eye_open = (0.42 - 0.1 * p.smile) * float(p.rng.uniform(0.92, 1.08))
    gaze = p.rng.uniform(-0.25, 0.25, size=2) + np.array([p.yaw * 0.3, 0])
    centres = []
    for side in (-1, 1):
        ex, ey, ew = g.fx + side * g.eye_dx, g.eye_y, g.eye_w * (1 - 0.25 * max(0.0, side * p.yaw))
        upper_h, lower_h = eye_open * ew * 1.25, eye_open * ew * (0.55 - 0.25 * p.smile)
        upper = _curve(ex - ew, ex + ew, ey, upper_h, 20, 2.2)
        upper[:, 1] += side * np.linspace(1, -1, len(upper)) * 0.05 * ew  # the outer corner sits higher
        lower = _curve(ex - ew, ex + ew, ey, -lower_h, 20, 2.0)[::-1]
        white = _poly_mask(shape, np.concatenate([upper, lower]))
        _blend(img, white, np.array([232, 226, 220], np.float32), light=0.78 + 0.22 * p.shading)
        # Corners of the white are in shadow.
        _shade(img, -0.3 * (1 - _gauss(grid, ex, ey, 0.55 * ew, 10 * ew)), white)
        ix, iy = ex + gaze[0] * ew * 0.35, ey + gaze[1] * ew * 0.1
        iris_r = 0.5 * ew
        iris = _ellipse_mask(shape, (ix, iy), (iris_r, iris_r)) * white
        radial = np.sqrt(np.add.outer((grid[1] - iy) ** 2, (grid[0] - ix) ** 2)) / iris_r
        iris_light = 1.15 - 0.5 * np.clip(radial, 0, 1) ** 2  # darker towards the rim
        _blend(img, iris, np.array(p.look.eye_color, np.float32), light=iris_light)
        _blend(img, _ellipse_mask(shape, (ix, iy), (0.45 * iris_r, 0.45 * iris_r)) * white,
               np.array([12, 10, 10], np.float32))
        # The upper lid shades the top of the eye.
        _shade(img, -0.35 * np.clip((ey - upper_h * 0.2 - ys) / (upper_h * 0.8 + 1e-3), 0, 1), white)
        hx, hy = ix - 0.25 * iris_r + p.light[0] * 0.2 * iris_r, iy - 0.3 * iris_r
        glint = _ellipse_mask(shape, (hx, hy), (0.16 * iris_r, 0.16 * iris_r))
        _blend(img, glint, np.array([255, 255, 255], np.float32), 0.9)
        lash = 0.11 * ew * (1.35 if not p.male else 1.0)
        _blend(img, _polyline_mask(shape, upper, lash), np.array([25, 18, 16], np.float32), 0.95)
        _blend(img, _polyline_mask(shape, lower, 0.04 * ew + 0.6 * s), p.skin * 0.5, 0.55)
        crease = _curve(ex - ew * 0.85, ex + ew * 0.9, ey - upper_h * 0.55, upper_h * 0.75, 16, 2.0)
        _shade(img, -0.28 * _soften(_polyline_mask(shape, crease, 1.4 * s), 0.8 * s))
        if p.happy:  # raised cheeks push a crease under the eye
            under = _curve(ex - ew * 0.8, ex + ew * 0.8, ey + lower_h + 0.04 * g.b, -0.03 * g.b, 12)
            _shade(img, -0.18 * _soften(_polyline_mask(shape, under, 1.6 * s), 1.2 * s))
        centres.append((ex, ey))
    return centres[0], centres[1]


def _draw_brows_and_nose(p: _Painter) -> None:
    g, look, b = p.g, p.look, p.g.b
    brow_col = p.hair * 0.75 if look.hair_color[0] < 150 else p.hair * 0.55  # fair hair, darker brows
    for side in (-1, 1):
        ex = g.fx + side * g.eye_dx
        inner, outer = ex - side * 1.05 * g.eye_w, ex + side * 1.3 * g.eye_w
        t = np.linspace(0, 1, 16)
        bx = inner + (outer - inner) * t
        arch = look.brow_arch * 0.08 * b + (0.02 * b if p.happy else 0)
        by = g.brow_y + 0.03 * b * (1 - t) - arch * np.sin(np.pi * np.clip(t * 1.15, 0, 1))
        thick = (0.06 * b * look.brow_thickness) * (1.0 - 0.55 * t)
        top = np.stack([bx, by - thick / 2], 1)
        bottom = np.stack([bx, by + thick / 2], 1)[::-1]
        brow = _soften(_poly_mask(p.shape, np.concatenate([top, bottom])), 0.7 * p.s)
        _blend(p.img, brow, brow_col, 0.9)

    nw = 0.2 * g.a * look.nose_width
    for side in (-1, 1):
        nostril = _ellipse_mask(p.shape, (g.nose_x + side * 0.45 * nw, g.nose_y + 0.04 * b),
                                (0.22 * nw, 0.1 * nw), side * -15)
        _blend(p.img, _soften(nostril, 0.8 * p.s), p.skin * 0.3, 0.8)
        wing = _curve(g.nose_x + side * 0.6 * nw, g.nose_x + side * 1.0 * nw, g.nose_y, 0.06 * b, 8)
        _shade(p.img, -0.25 * _soften(_polyline_mask(p.shape, wing, 1.5 * p.s), 1.0 * p.s))


def _draw_hair(p: _Painter) -> None:
    g, shape, xs, ys, s = p.g, p.shape, p.xs, p.ys, p.s
    cx, cy, a, b = g.cx, g.cy, g.a, g.b
    style = p.look.hair_style
    volume = {"buzz": 1.03, "short": 1.08, "side": 1.1, "curly": 1.16, "long": 1.12, "bob": 1.12,
              "parted": 1.1, "bun": 1.04}[style]
    skull = _ellipse_mask(shape, (cx, cy - 0.3 * b), (a * volume, b * (0.95 + 0.8 * (volume - 1))))
    hairline = g.brow_y - (0.45 if style in _MALE_HAIR else 0.3) * b * p.look.hairline
    # Hairline: lower at the temples; a fringe or side part changes its shape.
    rel = (xs - g.fx) / a
    line = hairline + 0.18 * b * np.abs(rel) ** 2
    if style == "side":
        line = line + 0.08 * b * np.clip(rel + 0.3, 0, 1) - 0.05 * b
    elif style in ("long", "bob"):  # a straight fringe
        line = hairline + 0.04 * b - 0.04 * b * np.cos(rel * 2.2)
    elif style == "parted":  # a middle parting: the forehead shows, the hair falls away to both sides
        line = g.brow_y - 0.5 * b + 0.5 * b * np.clip(np.abs(rel) - 0.05, 0, None) ** 1.5
    elif style == "curly":
        line = line + 0.03 * b * np.sin(xs / (4 * s))
    above = np.clip((line - ys) / (1.5 * s) + 0.5, 0, 1)
    temples = np.clip((np.abs(xs - cx) - 0.86 * a) / (2 * s), 0, 1) * np.clip((g.eye_y - ys) / (3 * s), 0, 1)
    # Hair covers the skull above the hairline, at the temples, and wherever the skull is not face.
    cap = _soften(skull * np.maximum(np.maximum(above, temples), 1 - p.face), 0.7 * s)
    if style == "buzz":  # thin enough for the skin to show through on the face, opaque elsewhere
        _blend(p.img, cap * (1 - 0.25 * p.face), p.hair, light=p.hair_light)
    else:
        _blend(p.img, cap, p.hair, light=p.hair_light)
    p.cover(cap)
    if style in _LONG_HAIR:  # side locks falling over the cheeks and ears
        bottom = g.chin_y + (0.05 * b if style == "bob" else 0.8 * b)
        for side in (-1, 1):
            lock = np.array([[cx + side * 0.8 * a, hairline + 0.1 * b], [cx + side * 1.22 * a, cy - 0.2 * b],
                             [cx + side * 1.32 * a, bottom], [cx + side * 1.05 * a, bottom],
                             [cx + side * 0.93 * a, g.nose_y], [cx + side * 0.88 * a, g.eye_y - 0.1 * b]])
            mask = _poly_mask(shape, lock)
            _blend(p.img, mask, p.hair, light=p.hair_light)
            p.cover(mask)
    elif style == "bun":  # hair pulled back into a bun on top
        bun = _ellipse_mask(shape, (cx, cy - 1.25 * b), (0.42 * a, 0.3 * b)) * (1 - cap)
        _blend(p.img, bun, p.hair * 0.9, light=p.hair_light)
        p.cover(bun)


def _draw_glasses(p: _Painter) -> None:
    if not p.look.glasses:
        return
    g, shape, s = p.g, p.shape, p.s
    frame_col = np.array([30, 28, 30], np.float32)
    rim_w, rim_h = 1.45 * g.eye_w, 0.95 * g.eye_w
    for side in (-1, 1):
        ex = g.fx + side * g.eye_dx
        lens = _ellipse_mask(shape, (ex, g.eye_y + 0.02 * g.b), (rim_w, rim_h))
        _shade(p.img, 0.05 * lens)  # a faint reflection
        rim = _ellipse_mask(shape, (ex, g.eye_y + 0.02 * g.b), (rim_w + 1.6 * s, rim_h + 1.6 * s)) - lens
        _blend(p.img, np.clip(rim, 0, 1), frame_col, 0.9)
        arm = np.array([[ex + side * rim_w, g.eye_y], [g.cx + side * 0.98 * g.a, g.eye_y - 0.02 * g.b]])
        _blend(p.img, _polyline_mask(shape, arm, 2 * s), frame_col, 0.9)
    bridge = _curve(g.fx - g.eye_dx + rim_w, g.fx + g.eye_dx - rim_w, g.eye_y - 0.02 * g.b, 0.03 * g.b, 8)
    _blend(p.img, _polyline_mask(shape, bridge, 2 * s), frame_col, 0.9)


def render_head(look: PersonLook, emotion: str, rng: np.random.Generator, width: int = 320,
                yaw: float = 0.0, light: tuple[float, float] = (0.0, -0.3)) -> Sprite:
    """Draw one person's head and shoulders with an expression, on a transparent sprite ``width`` pixels wide.

    ``yaw`` in [-1, 1] turns the features sideways (the caller squashes the sprite to match); ``light`` is the
    direction light comes from in the image plane (x right, y down), which shades the skin and hair.
    Per-photo detail (gaze, smile strength, skin texture) comes from ``rng``.
    """
    if emotion not in EMOTIONS:
        raise EdgefaceError(f"emotion must be one of {EMOTIONS}, got {emotion!r}")
    if look.gender not in GENDERS:
        raise EdgefaceError(f"{look.name}: gender must be one of {GENDERS}, got {look.gender!r}")
    p = _Painter(look, emotion, rng, width, yaw, light)
    # Back to front: what is drawn later covers what is drawn earlier.
    _draw_back_hair_and_body(p)
    _draw_ears(p)
    _draw_skin(p)
    _draw_beard(p)
    _draw_mouth(p)
    eyes = _draw_eyes(p)
    _draw_brows_and_nose(p)
    _draw_hair(p)
    _draw_glasses(p)
    g = p.g
    box = (g.fx - g.a, g.brow_y - 0.12 * g.b, g.fx + g.a, g.chin_y)
    return Sprite(np.clip(p.img, 0, 255).astype(np.uint8), p.alpha, eyes, box)


# === Photos =================================================================================================

def _ramp(hw: tuple[int, int], angle: float) -> np.ndarray:
    """A linear ramp from -0.5 to 0.5 (about) across an image, in direction ``angle``."""
    h, w = hw
    xs = (np.arange(w, dtype=np.float32) / w - 0.5) * np.float32(np.cos(angle))
    ys = (np.arange(h, dtype=np.float32) / h - 0.5) * np.float32(np.sin(angle))
    return ys[:, None] + xs[None, :]


def _background(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """A cluttered indoor-ish background: a gradient wall plus random shapes, slightly out of focus."""
    import cv2

    h, w = hw
    c0, c1 = rng.uniform(30, 230, size=3), rng.uniform(30, 230, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    t = _ramp(hw, angle)[..., None] + 0.5
    img = np.ascontiguousarray(c0 * (1 - t) + c1 * t, dtype=np.float32)
    for _ in range(int(rng.integers(6, 16))):
        colour = tuple(float(c) for c in rng.uniform(10, 245, size=3))
        kind = rng.integers(4)
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        size = float(rng.uniform(0.05, 0.4)) * max(h, w)
        if kind == 0:
            corner = (int(x + size * rng.uniform(0.3, 1.5)), int(y + size))
            cv2.rectangle(img, (int(x), int(y)), corner, colour, -1)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(size / 2), colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (int(x + rng.normal(0, size)), int(y + rng.normal(0, size)))
            cv2.line(img, (int(x), int(y)), end, colour, int(rng.integers(2, 10)), cv2.LINE_AA)
        else:
            corners = rng.normal(0, size / 2, size=(int(rng.integers(3, 6)), 2))
            pts = (np.array([x, y]) + corners).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    img *= 1 + 0.04 * _texture(rng, hw, 6)[..., None]
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.8, 2.5)))


def _sprite_matrix(sprite: Sprite, eye_centre: tuple[float, float], face_width: float, angle_deg: float,
                   squash: float) -> np.ndarray:
    """The 2x3 transform putting a sprite's eye centre at ``eye_centre``, face ``face_width`` px wide."""
    (x0, _, x1, _) = sprite.box
    scale = face_width / (x1 - x0)
    src = np.mean(np.array(sprite.eyes), axis=0)
    theta = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    linear = rot @ np.diag([scale * squash, scale])
    offset = np.asarray(eye_centre) - linear @ src
    return np.hstack([linear, offset[:, None]])


def _paste(canvas: np.ndarray, sprite: Sprite, matrix: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """Alpha-blend a sprite into a float canvas through an affine transform, in place; returns where it covers
    the canvas (x0, y0 and the coverage of that window), None when nowhere."""
    import cv2

    h, w = canvas.shape[:2]
    # Repeat the bottom rows (the shirt) so the body reaches the bottom of the frame whatever the scale.
    extra = sprite.rgb.shape[0]
    rgb = cv2.copyMakeBorder(sprite.rgb, 0, extra, 0, 0, cv2.BORDER_REPLICATE)
    alpha = cv2.copyMakeBorder(sprite.alpha, 0, extra, 0, 0, cv2.BORDER_REPLICATE)
    # Warp only into the part of the canvas the sprite covers.
    sh, sw = rgb.shape[:2]
    corners = np.array([_apply(matrix, (x, y)) for x in (0, sw) for y in (0, sh)])
    x0, y0 = np.floor(corners.min(axis=0)).astype(int).clip(0, None)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x1, y1 = min(int(x1), w), min(int(y1), h)
    if x1 <= x0 or y1 <= y0:
        return None
    m = matrix.copy()
    m[:, 2] -= (x0, y0)
    # warpAffine samples bilinearly; shrinking more than 2x that way aliases thin lines, so halve first.
    while np.hypot(m[0, 0], m[1, 0]) < 0.5 and min(rgb.shape[:2]) > 16:
        rgb, alpha = cv2.pyrDown(rgb), cv2.pyrDown(alpha)
        m[:, :2] *= 2.0
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpAffine(rgb, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cover = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    target = canvas[y0:y1, x0:x1]
    target += (warped.astype(np.float32) - target) * cover[..., None]
    return int(x0), int(y0), cover


def _apply(matrix: np.ndarray, point: tuple[float, float]) -> tuple[float, float]:
    x, y = matrix @ np.array([point[0], point[1], 1.0])
    return float(x), float(y)


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """What a cheap camera does: uneven light, exposure, colour cast, noise, sometimes blur, JPEG."""
    import cv2

    ramp = _ramp(img.shape[:2], float(rng.uniform(0, 2 * np.pi)))
    img = img * (1 + float(rng.uniform(0.1, 0.45)) * ramp)[..., None]
    contrast = rng.uniform(0.75, 1.2)
    img = (img - 128) * contrast + 128 + rng.uniform(-25, 25)
    img = img * rng.uniform(0.9, 1.1, size=3).astype(np.float32)  # white balance
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 1.4)))
    img += rng.standard_normal(img.shape, dtype=np.float32) * float(rng.uniform(1.5, 6))
    out = np.clip(img, 0, 255).astype(np.uint8)
    _, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 95))])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # type: ignore[return-value]  # never None: imencode's JPEG


def render_photo(look: PersonLook, emotion: str, rng: np.random.Generator, size: tuple[int, int] = (320, 256)
                 ) -> Photo:
    """One photo (``size`` = (h, w)) of a person with an expression, plus where the drawn eyes and face are.

    The face varies in position, scale, in-plane rotation (±15°) and yaw; the photo in lighting, background,
    noise, blur and JPEG quality. All randomness comes from ``rng``.
    """
    h, w = size
    face_w = float(rng.uniform(0.32, 0.52)) * min(w, 0.8 * h)
    angle = float(rng.uniform(-15, 15))
    yaw = float(rng.uniform(-0.35, 0.35))
    light = (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.6, 0.1)))
    # Draw at about the size the face will appear: drawing costs by the pixel, and enlarging by 10% on
    # pasting does not show.
    sprite_w = int(np.clip(face_w / _FACE_W * _SPRITE[0] * 0.9, 120, 400))
    sprite = render_head(look, emotion, rng, width=sprite_w, yaw=yaw, light=light)
    centre = (float(rng.uniform(0.5 * face_w + 4, w - 0.5 * face_w - 4)),
              float(rng.uniform(0.25 * h + 0.1 * face_w, 0.55 * h)))
    matrix = _sprite_matrix(sprite, centre, face_w, angle, 1 - 0.18 * abs(yaw))
    canvas = _background(rng, size)
    _paste(canvas, sprite, matrix)
    image = _camera(rng, canvas)
    eyes = (_apply(matrix, sprite.eyes[0]), _apply(matrix, sprite.eyes[1]))
    corners = np.array([_apply(matrix, (x, y)) for x in sprite.box[::2] for y in sprite.box[1::2]])
    box = (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()),
           float(corners[:, 1].max()))
    return Photo(image, eyes, box)


def render_face(look: PersonLook, emotion: str, rng: np.random.Generator, size: tuple[int, int] = (320, 256)
                ) -> np.ndarray:
    """One RGB uint8 photo (``size`` = (h, w)) of a person with an expression; see ``render_photo``."""
    return render_photo(look, emotion, rng, size).image


# === Data sets ==============================================================================================

def make_synthetic_dataset(out_dir: str | Path, people: int | Sequence[PersonLook] = 8,
                           photos_per_person: int = 24, image_size: tuple[int, int] = (320, 256),
                           seed: int = 0, progress: bool = False) -> Path:
    """Write ``images/*.jpg`` and ``labels.csv`` (image,identity,emotion,gender) in ``out_dir``: the CSV path.

    Each person gets as many happy as neutral photos (one more happy when the count is odd), in a shuffled
    order. The same arguments give the same files.
    """
    from edgeface.core.imageio import write_image
    from edgeface.core.progress import progress_bar

    out = Path(out_dir)
    looks = make_people(people, seed) if isinstance(people, int) else list(people)
    if photos_per_person < 1:
        raise EdgefaceError(f"photos_per_person must be at least 1, got {photos_per_person}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = []
    for p, look in enumerate(looks):
        order = np.random.default_rng([seed, p, 1]).permutation(photos_per_person)
        for k in range(photos_per_person):
            jobs.append((p, k, look, EMOTIONS[int(order[k] % 2)]))
    rows = []
    for p, k, look, emotion in progress_bar(jobs, desc="drawing faces", unit="img", enabled=progress):
        image = render_face(look, emotion, np.random.default_rng([seed, p, 2, k]), image_size)
        name = f"images/{look.name.lower()}_{k:03d}.jpg"
        write_image(out / name, image, quality=92)
        rows.append((name, look.name, emotion, look.gender))
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "identity", "emotion", "gender"))
        writer.writerows(rows)
    return csv_path


# === Frames ==================================================================================================

def head_width(face_width: float) -> int:
    """The sprite width ``render_head`` needs for a face ``face_width`` pixels wide (cheek to cheek), drawn at
    about the size it will be pasted: drawing costs by the pixel."""
    return max(16, int(round(face_width / _FACE_W * _SPRITE[0])))


def backdrop(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A cluttered indoor-ish background of ``size`` (h, w), RGB uint8: a gradient wall and random shapes."""
    return np.clip(_background(rng, size), 0, 255).astype(np.uint8)


def composite_frame(background: np.ndarray | tuple[int, int],
                    faces: Sequence[tuple[Sprite, tuple[float, float, float]]],
                    rng: np.random.Generator | None = None, noise: float = 2.0) -> tuple[np.ndarray, list[dict]]:
    """Paste heads onto a frame, in order (later ones cover earlier ones); return the RGB uint8 frame and where
    each face landed.

    ``background`` is an RGB image or an (h, w) size (a cluttered background is drawn with ``rng``). Each face
    is a sprite and ``(x, y, w)``: the centre between the eyes in frame pixels and the face width in pixels.
    Per face, the result lists ``{"box": [x0, y0, x1, y1], "eyes": [[x, y], [x, y]], "visible": v}`` in pasting
    order, ``visible`` being the share of the face box inside the frame and not covered by a later sprite.
    With ``rng`` the frame also gets camera noise of ``noise`` grey levels (no JPEG: a video codec compresses).
    """
    if isinstance(background, tuple):
        canvas = _background(rng or np.random.default_rng(0), background)
    else:
        canvas = background.astype(np.float32)
    placed: list[dict[str, Any]] = []
    covers = []
    for sprite, (x, y, width) in faces:
        matrix = _sprite_matrix(sprite, (x, y), width, 0.0, 1.0)
        covers.append(_paste(canvas, sprite, matrix))
        corners = [_apply(matrix, sprite.box[0:2]), _apply(matrix, sprite.box[2:4])]
        placed.append({"box": [round(v, 1) for corner in corners for v in corner],
                       "eyes": [[round(v, 1) for v in _apply(matrix, e)] for e in sprite.eyes]})
    for i, face in enumerate(placed):
        face["visible"] = round(_visible(face["box"], covers[i + 1:], canvas.shape[:2]), 3)
    if rng is not None and noise > 0:
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(canvas, 0, 255).astype(np.uint8), placed


def _visible(box: Sequence[float], above: Sequence[tuple[int, int, np.ndarray] | None],
             hw: tuple[int, int]) -> float:
    """The share of ``box`` inside a frame of size ``hw`` and not covered by the sprites ``above`` it."""
    x0, y0, x1, y1 = box
    area = max((x1 - x0) * (y1 - y0), 1e-6)
    bx0, by0 = max(0, int(round(x0))), max(0, int(round(y0)))
    bx1, by1 = min(hw[1], int(round(x1))), min(hw[0], int(round(y1)))
    if bx1 <= bx0 or by1 <= by0:
        return 0.0
    seen = np.ones((by1 - by0, bx1 - bx0), np.float32)
    for cover in above:
        if cover is None:
            continue
        cx0, cy0, alpha = cover
        ox0, oy0 = max(bx0, cx0), max(by0, cy0)
        ox1, oy1 = min(bx1, cx0 + alpha.shape[1]), min(by1, cy0 + alpha.shape[0])
        if ox1 > ox0 and oy1 > oy0:
            seen[oy0 - by0:oy1 - by0, ox0 - bx0:ox1 - bx0] *= 1 - alpha[oy0 - cy0:oy1 - cy0, ox0 - cx0:ox1 - cx0]
    return min(1.0, float(seen.sum()) / area)
