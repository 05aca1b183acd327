"""``image_folder``: a user's folder of images (FFHQ, LSUN, ...), resized and centre-cropped on the fly."""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

import vqbench
from vqbench.errors import ConfigError
from vqbench.interfaces import ImageSource
from vqbench.io import fingerprint
from vqbench.streaming import first_readable

log = logging.getLogger(__name__)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


class UnreadableImage(OSError):
    """Raised for a file that cannot be decoded; callers skip and count it."""


@dataclass
class ImageFolderConfig:
    path: str = ""  # folder searched recursively for jpg/png/webp
    max_images: int | None = None  # use only the first N files (sorted by path); omit for all
    labels: str | None = None  # CSV: a `filename` column (relative to `path`) + integer label columns named by the header


def to_rgb_square(image: Image.Image, resolution: int) -> np.ndarray:
    """Any mode (greyscale, RGBA, CMYK, palette) → RGB; shorter side resized to ``resolution``, then centre crop."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


class ImageFolder(ImageSource):
    """A folder of jpg/png/webp images (recursive), converted to RGB, resized and centre-cropped."""

    Config = ImageFolderConfig

    def __init__(self, config: ImageFolderConfig, resolution: int):
        super().__init__(config, resolution)
        self._files: list[Path] | None = None
        self._labels: np.ndarray | None = None
        self.label_names: tuple[str, ...] = ()  # type: ignore[misc]  # from the labels file's header

    @property
    def files(self) -> list[Path]:
        if self._files is None:
            root = Path(self.config.path).expanduser()
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
            self._files = files if self._max_images("dataset.params.max_images") is None else files[: self.config.max_images]
        return self._files

    def _max_images(self, key: str) -> int | None:
        """``max_images``, refused unless positive (a negative one would cut off the last files, 0 would mean all)."""
        value = self.config.max_images
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigError(key, f"must be a positive integer (or omitted for all images), got {value!r}; e.g. `--set {key}=1000`")
        return value

    def check(self, key: str) -> None:
        root = Path(self.config.path).expanduser()
        self._max_images(f"{key}.max_images")
        if not self.config.path:
            raise ConfigError(f"{key}.path", "no image folder given; set it, e.g. `--set dataset.params.path=/data/ffhq`")
        if not root.is_dir():
            raise ConfigError(
                f"{key}.path",
                f"image folder {str(root)!r} does not exist; put the images there or point elsewhere with `--set {key}.path=/path/to/images`",
            )
        if not self.files:
            raise ConfigError(f"{key}.path", f"image folder {str(root)!r} has no .jpg/.jpeg/.png/.webp files (searched recursively)")
        readable, reason = first_readable(self)  # one read when the first image is fine
        if readable is None:
            raise ConfigError(
                f"{key}.path",
                f"none of the {len(self.files)} image files in {str(root)!r} can be read (e.g. {reason}); replace them with readable "
                f"jpg/png/webp images, or point elsewhere with `--set {key}.path=/path/to/images`",
            )
        if self.config.labels:
            self._read_labels(f"{key}.labels")

    def labels(self) -> np.ndarray | None:
        return self._read_labels("dataset.params.labels") if self.config.labels else None

    def _read_labels(self, key: str) -> np.ndarray:
        """The label rows of ``files`` from the CSV (filename + integer columns); errors name ``key`` and the path."""
        if self._labels is not None:
            return self._labels
        path = Path(str(self.config.labels)).expanduser()
        if not path.is_file():
            raise ConfigError(key, f"labels file {str(path)!r} not found")
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or header[0].strip() != "filename" or len(header) < 2:
                raise ConfigError(key, f"{path}: the first row must be `filename,<label name>,...`, got {header}")
            rows: dict[str, list[int]] = {}
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    rows[row[0].strip()] = [int(v) for v in row[1:]]
                except ValueError:
                    raise ConfigError(key, f"{path}:{line}: labels must be integers, got {row[1:]}") from None
                if len(row) != len(header) or min(rows[row[0].strip()]) < 0:
                    raise ConfigError(key, f"{path}:{line}: expected {len(header) - 1} non-negative integer labels, got {row[1:]}")
        root = Path(self.config.path).expanduser()
        names = [p.relative_to(root).as_posix() for p in self.files]
        missing = [n for n in names if n not in rows]
        if missing:
            raise ConfigError(key, f"{path} has no row for {len(missing)} image(s), e.g. {missing[0]!r} (filenames are relative to {str(root)!r})")
        self.label_names = tuple(h.strip() for h in header[1:])
        self._labels = np.asarray([rows[n] for n in names], dtype=np.int64)
        return self._labels

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                return to_rgb_square(image, self.resolution)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise UnreadableImage(f"{path}: {err}") from None

    def fingerprint(self) -> str:
        root = Path(self.config.path).expanduser()
        listing = [(str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime)) for p in self.files]
        labels = hashlib.sha256(Path(self.config.labels).expanduser().read_bytes()).hexdigest() if self.config.labels else None
        return fingerprint("image_folder", listing, self.resolution, *([labels] if labels else []))


@vqbench.hookimpl
def vqbench_register_datasets(registry):
    registry.register("image_folder", ImageFolder)
