"""``toyfaces``: procedurally drawn face-like images with known generative factors (an offline FFHQ stand-in).

Each image is a pure function of (seed, index) and can be rendered at any resolution from 32² to 1024²; shapes are
drawn with signed distances and one-pixel anti-aliasing, so the same face looks the same at every size. The factors
are independent unless ``correlation`` ties hair colour to background (both marginals stay uniform).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import vqbench
from vqbench.config import in_unit_interval, positive
from vqbench.errors import ConfigError
from vqbench.interfaces import ImageSource
from vqbench.io import fingerprint

RENDER_VERSION = 1
BACKGROUNDS = np.array([[70, 110, 160], [200, 200, 190], [120, 160, 100], [170, 90, 90], [60, 60, 70], [230, 200, 120]])
SKIN = np.array([[255, 224, 196], [240, 200, 160], [210, 160, 120], [170, 120, 80], [120, 80, 55], [90, 60, 40]])
HAIR = np.array([[30, 25, 20], [100, 60, 30], [200, 160, 90], [150, 50, 30], [200, 200, 205]])
FACE_RADII = {0: (0.46, 0.52), 1: (0.38, 0.56), 2: (0.54, 0.47)}  # round, oval, wide
LABEL_NAMES = (
    "face_shape", "skin_tone", "hair_style", "hair_colour", "eye_size", "eye_spacing",
    "mouth_curvature", "glasses", "background", "jitter_x", "jitter_y",
)  # fmt: skip
LABEL_CARDINALITY = (3, 6, 4, 5, 3, 3, 4, 2, 6, 7, 7)
TIED = (LABEL_NAMES.index("hair_colour"), LABEL_NAMES.index("background"))  # the pair ``correlation`` makes dependent


@dataclass
class ToyFacesConfig:
    count: int = 10000  # number of distinct images
    seed: int = 0
    correlation: float = 0.0  # probability that hair colour and background come from one shared draw (0: independent)

    def validate(self, key: str) -> None:
        positive(key, "count", self.count)
        in_unit_interval(key, "correlation", self.correlation)


def sample_factors(seed: int, index: int, correlation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The integer factors (the labels) and continuous colour jitter of image ``index``.

    With ``correlation`` c > 0, with probability c hair colour and background are both read off one uniform u
    (⌊5u⌋, ⌊6u⌋: comonotone), else drawn independently; each marginal stays uniform, only their dependence changes.
    Those extra draws come after the others, so every other factor, and everything at c = 0, is as before."""
    rng = np.random.default_rng([seed, index, RENDER_VERSION])
    factors = np.array([rng.integers(n) for n in LABEL_CARDINALITY], dtype=np.int64)
    colour_noise = rng.normal(0.0, 8.0, size=(4, 3))
    if correlation > 0.0:
        tie, shared = rng.random(2)
        if tie < correlation:
            for column in TIED:
                factors[column] = int(shared * LABEL_CARDINALITY[column])
    return factors, colour_noise


def _soft(signed_distance: np.ndarray, pixel: float) -> np.ndarray:
    """Coverage from a signed distance (negative inside), anti-aliased over one pixel."""
    return np.clip(0.5 - signed_distance / pixel, 0.0, 1.0)


def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return (np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2) - 1.0) * min(rx, ry)


def render(factors: np.ndarray, colour_noise: np.ndarray, resolution: int) -> np.ndarray:
    """Draw one face (uint8 resolution×resolution×3)."""
    shape, skin, hair_style, hair_colour, eye_size, eye_spacing, mouth, glasses, bg, jx, jy = (int(f) for f in factors)
    coords = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
    v, u = np.meshgrid(coords, coords, indexing="ij")
    px = 2.0 / resolution
    canvas = np.empty((resolution, resolution, 3))
    canvas[:] = np.clip(BACKGROUNDS[bg] + colour_noise[0], 0, 255)
    # a soft vertical gradient so the background is not flat
    canvas *= 1.0 - 0.12 * (v[..., None] + 1.0) / 2.0

    def paint(alpha: np.ndarray, colour: np.ndarray) -> None:
        canvas[:] = canvas * (1.0 - alpha[..., None]) + np.clip(colour, 0, 255) * alpha[..., None]

    cx, cy = (jx - 3) * 0.035, (jy - 3) * 0.035 + 0.05
    rx, ry = FACE_RADII[shape]
    hair = HAIR[hair_colour] + colour_noise[1]
    skin_rgb = SKIN[skin] + colour_noise[2]
    if hair_style == 2:  # long hair behind the face
        paint(_soft(_ellipse(u, v, cx, cy + 0.12, rx * 1.28, ry * 1.18), px), hair)
    paint(_soft(np.maximum(np.abs(u - cx) - 0.14, v - 1.2), px) * (v > cy + ry * 0.6), skin_rgb * 0.9)  # neck
    paint(_soft(_ellipse(u, v, cx, cy, rx, ry), px), skin_rgb)
    if hair_style in (1, 2, 3):  # cap of hair over the top of the head
        cap = np.maximum(_ellipse(u, v, cx, cy - 0.04, rx * 1.06, ry * 0.98), (v - (cy - ry * 0.35)))
        paint(_soft(cap, px), hair)
    if hair_style == 3:  # bun
        paint(_soft(_ellipse(u, v, cx, cy - ry - 0.1, 0.16, 0.14), px), hair)
    eye_r = (0.055, 0.075, 0.095)[eye_size]
    eye_dx = (0.15, 0.19, 0.23)[eye_spacing] * rx / 0.46
    for side in (-1.0, 1.0):
        ex = cx + side * eye_dx
        paint(_soft(_ellipse(u, v, ex, cy - 0.02, eye_r, eye_r * 0.8), px), np.array([250.0, 250.0, 250.0]))
        paint(_soft(_ellipse(u, v, ex, cy - 0.02, eye_r * 0.5, eye_r * 0.5), px), np.array([30.0, 30.0, 40.0]))
        if glasses:
            ring = np.abs(np.sqrt((u - ex) ** 2 + (v - cy + 0.02) ** 2) - eye_r * 1.7) - 0.012
            paint(_soft(ring, px), np.array([20.0, 20.0, 20.0]))
    if glasses:
        bridge = np.maximum(np.abs(v - (cy - 0.02)) - 0.01, np.abs(u - cx) - (eye_dx - eye_r * 1.7))
        paint(_soft(bridge, px), np.array([20.0, 20.0, 20.0]))
    curvature = (-1.6, 0.0, 1.6, 3.0)[mouth]
    mouth_y = cy + ry * 0.5
    curve = mouth_y - curvature * 0.1 * (1.0 - ((u - cx) / 0.17) ** 2) * 0.5
    lips = np.maximum(np.abs(v - curve) - 0.018, np.abs(u - cx) - 0.17)
    paint(_soft(lips, px), np.array([150.0, 40.0, 50.0]) + colour_noise[3])
    nose = _ellipse(u, v, cx, cy + ry * 0.18, 0.03, 0.05)
    paint(_soft(nose, px) * 0.5, skin_rgb * 0.75)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


class ToyFaces(ImageSource):
    """Procedural face-like images with known generative factors as labels (offline FFHQ stand-in)."""

    Config = ToyFacesConfig
    label_names = LABEL_NAMES

    def __init__(self, config: ToyFacesConfig, resolution: int):
        if not 8 <= resolution <= 1024:
            raise ConfigError("dataset.resolution", f"toyfaces renders from 8 to 1024 pixels, got {resolution}")
        super().__init__(config, resolution)

    def __len__(self) -> int:
        return self.config.count

    def image(self, index: int) -> np.ndarray:
        if not 0 <= index < self.config.count:
            raise IndexError(f"toyfaces index {index} out of range [0, {self.config.count})")
        return render(*sample_factors(self.config.seed, index, self.config.correlation), self.resolution)

    def labels(self) -> np.ndarray:
        return np.stack([sample_factors(self.config.seed, i, self.config.correlation)[0] for i in range(self.config.count)])

    def fingerprint(self) -> str:
        """Independent factors keep the key they always had; a correlation enters it."""
        dependence = (("correlation", float(self.config.correlation)),) if self.config.correlation else ()
        return fingerprint("toyfaces", RENDER_VERSION, self.config.seed, self.config.count, self.resolution, *dependence)


@vqbench.hookimpl
def vqbench_register_datasets(registry):
    registry.register("toyfaces", ToyFaces)
