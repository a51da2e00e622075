"""Procedural clothing, hair and skin colours for generated bodies (`bodies`): the outfit
draws here, the solids in `garments_fields`, the colours in `garments_colours`.

Every garment is a **closed, watertight** triangle mesh around the body, drawn from a
generator (`sample_outfit`) and built by `garments_fields.build_garment`:

* **Solid**: ``{x : sdf(x) < offset(x)}`` restricted to a region of the body, unioned with
  simple solids. ``sdf`` is the body's signed distance; it includes the body's inside, so a
  garment is a solid "thickened body part" whose only surfaces are the cloth's outer side
  and the caps where the region ends (a sleeve's cuff, a hem), the caps running through the
  body where they are hidden.
* **Regions** come from the body's own parts: every vertex belongs to one of `PARTS` (the
  Anny bone that skins it most); a point near the body takes a blend of the parts of its
  four nearest vertices, so cuts are smooth. Limbs are cut by the fraction ``s`` along the
  keypoint skeleton (shoulder 0 -> wrist 1, hip 0 -> ankle 1: sleeve and leg lengths),
  the torso by heights (hems, waists, necklines), hair by a hairline in the head's frame.
* **Simple solids**: a flared frustum (rounded-rectangle cross-sections) from the waist to
  the hem for skirts, dresses and coats (it fills the space between the legs and changes
  the silhouette; its cross-section encloses the hips and legs at every height and it is
  carved away around the arms), ellipsoids, slabs and tapered capsules for hair (bob, long
  hair down the back, bun, ponytail), joined by a smooth union.
* **Surface**: the field is evaluated on a `garments_fields.GRID_M` (12 mm) grid (the
  body's signed distance only within `garments_fields.BAND_M` of its vertices: plane
  distance to the four nearest vertices, blended by inverse squared distance; deeper nodes
  take the sign of their connected component), cut by marching cubes (scikit-image;
  vertices every ~12 mm, enough for patterns of 3 cm and more at 1024², see
  `garments_fields.SUBDIVIDE`) and Taubin-smoothed.

Because each garment is closed and outward-facing, the winding number of the concatenation
body + garments is the sum of theirs, so ``winding > 0.5`` (`point_sampling.label_points`)
is "inside any of them", and the renderer's nearest/farthest hits lie on the union's
boundary (checked in ``tests/datasets/synthetic_humans/test_garments.py``).
`garments_fields.hide_buried_faces` then marks the faces buried inside another piece (skin
under the clothes, by exact signed distances to the closed pieces), which subjects leave
out of their surface (`bodies.GeneratedBody.subject`); labels come from the closed pieces.

**Colours** (`garments_colours`) are per vertex (`trimesh` ColorVisuals), solid 3D patterns
evaluated at vertex positions: plain, stripes, checks, prints (random blobs) and denim-like
noise. Skin tones interpolate the 10 swatches of the Monk Skin Tone scale (`SKIN_TONES`,
very light to very dark); hair is black, brown, blond, red or grey (grey more likely with
age).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PARTS = (
    "head", "neck", "torso", "arm_l", "arm_r", "hand_l", "hand_r",
    "leg_l", "leg_r", "foot_l", "foot_r",
)  # fmt: skip
HEAD, NECK, TORSO, ARM_L, ARM_R, HAND_L, HAND_R, LEG_L, LEG_R, FOOT_L, FOOT_R = range(len(PARTS))
GARMENT_KINDS = ("top", "trousers", "shorts", "skirt", "dress", "coat", "shoes", "hair")
HAIR_STYLES = ("short", "bob", "long", "bun", "ponytail")
PATTERNS = ("plain", "stripes", "checks", "print", "denim")

# Monk Skin Tone scale (Ellis Monk; swatches published by Google under CC BY 4.0), 1-10.
SKIN_TONES = np.array(
    [
        [246, 237, 228], [243, 231, 219], [247, 234, 208], [234, 218, 186], [215, 189, 150],
        [160, 126, 86], [130, 92, 67], [96, 65, 52], [58, 49, 42], [41, 36, 32],
    ],
    np.float64,
)  # fmt: skip
HAIR_COLOURS = {
    "black": (28, 24, 22),
    "dark_brown": (60, 40, 28),
    "brown": (105, 72, 45),
    "blond": (200, 165, 105),
    "red": (150, 62, 30),
    "grey": (165, 162, 158),
}
FABRIC_COLOURS = np.array(
    [
        [25, 25, 28], [240, 240, 235], [120, 120, 125], [30, 45, 90], [170, 30, 40],
        [60, 90, 50], [200, 180, 140], [110, 70, 40], [120, 170, 215], [230, 150, 170],
        [215, 170, 40], [30, 120, 110], [100, 30, 50], [230, 110, 40], [90, 60, 130],
        [245, 225, 180],
    ],
    np.float64,
)  # fmt: skip
DENIM_COLOURS = np.array([[45, 65, 110], [70, 95, 140], [35, 40, 60], [110, 140, 180]], np.float64)
SHOE_COLOURS = np.array(
    [[20, 20, 22], [235, 235, 230], [100, 60, 35], [150, 35, 35], [60, 60, 65]], np.float64
)


def bone_part(name: str) -> int:
    """The `PARTS` id of an Anny bone (the part its vertices belong to)."""
    side = 1 if name.endswith(".R") else 0
    stem = name.split(".")[0]
    if stem.startswith(("upperarm", "lowerarm")):
        return ARM_L + side
    if stem.startswith(("wrist", "finger", "metacarpal")):
        return HAND_L + side
    if stem.startswith(("upperleg", "lowerleg")):
        return LEG_L + side
    if stem.startswith(("foot", "toe")):
        return FOOT_L + side
    if stem.startswith("neck"):
        return NECK
    if stem.startswith(("spine", "breast", "clavicle", "shoulder", "pelvis", "root")):
        return TORSO
    return HEAD  # head, jaw and the face muscles


# ---------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True)
class GarmentSpec:
    """One drawn garment: what to build and how to colour it (all JSON-able).

    Attributes:
      kind: one of `GARMENT_KINDS`; style: e.g. "loose" / "tight" / a hair style.
      params: shape parameters (metres, fractions; see `sample_outfit`).
      pattern: one of `PATTERNS` (hair: "hair"); colours: RGB 0-255 of the pattern.
      pattern_params: period, direction, seed... of the pattern.
    """

    kind: str
    style: str
    params: dict[str, float]
    pattern: str
    colours: tuple[tuple[int, int, int], ...]
    pattern_params: dict[str, float]
    colour_name: str = ""

    def meta(self) -> dict[str, Any]:
        """JSON-able summary (what ``bodies_<split>.json`` stores per garment)."""
        out = {
            "kind": self.kind,
            "style": self.style,
            **{k: round(float(v), 4) for k, v in self.params.items()},
            "pattern": self.pattern,
            "colours": [list(c) for c in self.colours],
        }
        if self.colour_name:
            out["colour_name"] = self.colour_name
        return out


@dataclasses.dataclass
class Garment:
    """A built garment: closed watertight mesh (subject frame) with per-vertex colours.

    ``visible`` (F,) bool marks the faces not buried inside the body or another garment
    (`garments_fields.hide_buried_faces`).
    """

    spec: GarmentSpec
    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32, outward winding
    colors: np.ndarray  # (V, 3) uint8
    visible: np.ndarray | None = None


def _rgb(x) -> tuple[int, int, int]:
    return tuple(round(float(c)) for c in np.clip(x, 0, 255))


def _fabric(rng: np.random.Generator, kind: str) -> tuple[str, tuple, dict[str, float]]:
    """A pattern, its colours and parameters for a garment of ``kind``."""
    if kind == "shoes":
        c = SHOE_COLOURS[rng.integers(len(SHOE_COLOURS))] * rng.uniform(0.85, 1.1)
        return "plain", (_rgb(c),), {"seed": int(rng.integers(1 << 30))}
    if kind in ("trousers", "shorts", "skirt", "coat"):
        p = {"trousers": 0.5, "shorts": 0.4, "skirt": 0.25, "coat": 0.1}[kind]
    else:
        p = 0.05
    weights = np.array([0.45, 0.18, 0.14, 0.16, 0.0])
    weights = np.concatenate([(1.0 - p) * weights[:4] / weights[:4].sum(), [p]])
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=weights))]
    a, b = rng.choice(len(FABRIC_COLOURS), size=2, replace=False)
    c0 = FABRIC_COLOURS[a] * rng.uniform(0.8, 1.1, 3)
    c1 = FABRIC_COLOURS[b] * rng.uniform(0.8, 1.1, 3)
    if pattern == "denim":
        c0 = DENIM_COLOURS[rng.integers(len(DENIM_COLOURS))] * rng.uniform(0.9, 1.1, 3)
        c1 = c0 * 1.35
    params = {
        "seed": int(rng.integers(1 << 30)),
        "period": float(rng.uniform(0.03, 0.08)),
        "duty": float(rng.uniform(0.25, 0.6)),
        "tilt": float(rng.choice([0.0, 0.0, 0.0, np.pi / 2, np.pi / 4])),
    }
    return pattern, (_rgb(c0), _rgb(c1)), params


def _hair_colour(rng: np.random.Generator, age_years: float) -> tuple[str, tuple]:
    p_grey = float(np.clip((age_years - 40.0) / 40.0, 0.0, 0.85))
    if rng.random() < p_grey:
        name = "grey"
    else:
        names = ("black", "dark_brown", "brown", "blond", "red")
        name = names[int(rng.choice(5, p=[0.35, 0.3, 0.17, 0.12, 0.06]))]
    c = np.asarray(HAIR_COLOURS[name], np.float64) * rng.uniform(0.85, 1.15)
    return name, (_rgb(c),)


def sample_outfit(
    rng: np.random.Generator,
    gender: float,
    age_years: float,
    kinds: tuple[str, ...] | None = None,
) -> list[GarmentSpec]:
    """Draw an outfit (hair, top or dress, lower garment, coat, shoes) for one person.

    Args:
      gender: Anny's control (0 male, 1 female): skirts, dresses and long hair are more
        likely the closer it is to 1; age_years: grey hair and baldness grow with age.
      kinds: build exactly these kinds (tests); their parameters are still drawn.
    """
    female = rng.random() < 0.1 + 0.8 * gender
    if kinds is None:
        chosen = []
        bald = rng.random() < (0.04 if female else 0.06 + 0.3 * (age_years > 40))
        if not bald:
            chosen.append("hair")
        lower = rng.random()
        if female and lower < 0.22:
            chosen.append("dress")
        else:
            chosen.append("top")
            if female and lower < 0.5:
                chosen.append("skirt")
            elif lower < 0.75:
                chosen.append("trousers")
            else:
                chosen.append("shorts")
        if rng.random() < 0.2:
            chosen.append("coat")
        if rng.random() < 0.9:
            chosen.append("shoes")
        kinds = tuple(chosen)
    bad = [k for k in kinds if k not in GARMENT_KINDS]
    if bad:
        raise ValueError(f"unknown garment kinds {bad} (one of {', '.join(GARMENT_KINDS)})")
    specs = []
    # What a coat must clear: the outermost top/dress offset ("top"); around the hips and
    # legs the lower garments' largest offset ("lower") and a skirt's or dress's flare,
    # length and waist.
    under: dict[str, float] = {"top": 0.0, "lower": 0.0}
    for kind in sorted(kinds, key=GARMENT_KINDS.index):
        style, params = _shape_params(kind, rng, female, under)
        if kind in ("top", "dress"):
            under["top"] = params["offset"] + params["looseness"]
        if kind in ("trousers", "shorts", "skirt", "dress"):
            widest = max(params["offset"], params.get("hem_offset", 0.0))
            under["lower"] = max(under["lower"], widest)
        if kind in ("skirt", "dress"):
            under |= {k: params[k] for k in ("flare", "length")}
            under["waist"] = params.get("waist", 0.3)
        if kind == "hair":
            name, colours = _hair_colour(rng, age_years)
            seed = {"seed": int(rng.integers(1 << 30))}
            specs.append(GarmentSpec(kind, style, params, "hair", colours, seed, name))
            continue
        pattern, colours, pattern_params = _fabric(rng, kind)
        specs.append(GarmentSpec(kind, style, params, pattern, colours, pattern_params))
    return specs


def _shape_params(kind, rng, female, under) -> tuple[str, dict[str, float]]:
    """Style and shape parameters of one garment (metres; fractions of the torso height
    (hip 0 -> shoulder 1) for hems and waists, of limb length for sleeves and legs;
    ``under``: what a coat must clear, see `sample_outfit`)."""
    u = rng.uniform
    if kind in ("top", "dress"):
        loose = rng.random() < 0.45
        sleeve = ("none", "short", "long")[int(rng.choice(3, p=[0.2, 0.4, 0.4]))]
        sleeve_len = {"none": u(0.04, 0.1), "short": u(0.25, 0.5), "long": u(0.85, 1.0)}[sleeve]
        params = {
            "offset": u(0.006, 0.01) if not loose else u(0.012, 0.022),
            "looseness": 0.0 if not loose else u(0.005, 0.03),
            "sleeve_length": sleeve_len,
            "sleeve_offset": u(0.006, 0.01) if not loose else u(0.01, 0.02),
            "sleeve_flare": u(0.0, 0.004) if not loose else u(0.0, 0.02),
            "hem": u(-0.08, 0.12) if kind == "top" else u(-0.05, 0.1),
        }
        if kind == "dress":
            length = u(0.2, 0.85)
            # A short skirt flares less (no tutus): the flare grows with the length.
            params |= {"length": length, "flare": length * u(0.03, 0.3)}
        return f"{'loose' if loose else 'tight'}_{sleeve}", params
    if kind in ("trousers", "shorts"):
        wide = rng.random() < 0.35
        length = u(0.82, 0.97) if kind == "trousers" else u(0.12, 0.45)
        return ("wide" if wide else "slim"), {
            "offset": u(0.008, 0.014),
            "hem_offset": u(0.025, 0.05) if wide else u(0.006, 0.014),
            "leg_length": length,
            "waist": u(0.15, 0.3),
        }
    if kind == "skirt":
        length = u(0.15, 0.85)
        return "skirt", {
            "offset": u(0.01, 0.016),
            "waist": u(0.2, 0.32),
            "length": length,
            "flare": length * u(0.03, 0.3),
        }
    if kind == "coat":
        params = {
            "offset": under["top"] + u(0.01, 0.02),
            "skirt_offset": under["lower"] + u(0.01, 0.02),
            "sleeve_length": u(0.9, 1.0),
            "length": u(0.25, 0.6),
            "flare": u(0.01, 0.08),
            "waist": under.get("waist", 0.3),
        }
        if "length" in under:
            # Over a skirt or dress: from the same waist, no longer and flaring more, so
            # the coat's frustum holds the skirt's at every height.
            params["length"] = min(params["length"], under["length"])
            params["flare"] = max(params["flare"], under["flare"] + u(0.01, 0.03))
        return "coat", params
    if kind == "shoes":
        boots = rng.random() < 0.25
        return ("boots" if boots else "shoes"), {
            "offset": u(0.006, 0.012),
            "height": u(0.6, 0.8) if boots else u(0.9, 0.96),
        }
    if kind == "hair":
        p = [0.2, 0.2, 0.35, 0.12, 0.13] if female else [0.75, 0.1, 0.07, 0.04, 0.04]
        style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=p))]
        return style, {
            "offset": u(0.005, 0.015) if style == "short" else u(0.01, 0.02),
            "volume": u(0.015, 0.035),
            "length": u(0.1, 0.35),
            "hairline": u(0.035, 0.06),
        }
    raise ValueError(kind)


def draw_skin(rng: np.random.Generator) -> tuple[float, tuple[int, int, int]]:
    """A skin tone: position on the Monk scale (1 very light - 10 very dark) and its RGB."""
    tone = float(rng.uniform(1.0, 10.0))
    k = min(int(tone) - 1, 8)
    rgb = SKIN_TONES[k] + (tone - 1 - k) * (SKIN_TONES[k + 1] - SKIN_TONES[k])
    return tone, _rgb(rgb * rng.uniform(0.95, 1.03, 3))
