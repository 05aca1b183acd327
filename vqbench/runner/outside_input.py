"""Reading samples produced outside vqbench (`vqbench evaluate --samples PATH`): a folder of PNG/JPEG images, an
``.npz`` of N×H×W×3 uint8 images (key ``arr_0`` as OpenAI's ADM evaluator writes, or ``images`` as ``vqbench export``
writes), or an ``.npy`` of N×h×w integer code grids. Every problem is a ConfigError naming the path (exit 2)."""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError
from ..io import sha256_file

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
NPZ_KEYS = ("arr_0", "images")  # the ADM evaluator's key first, then `vqbench export`'s


@dataclass
class OutsideSamples:
    """The samples to score (the first ``count`` of the input) and where they came from."""

    path: Path
    kind: str  # "image folder", "npz" or "codes"
    sha256: str  # of the file, or of the folder's image files (see ``folder_digest``)
    total: int  # samples in the input
    images: list[np.ndarray] | None  # H×W×3 uint8 each (sizes may differ in a folder), or None for codes
    codes: np.ndarray | None  # N×h×w int64 code grids
    key: str | None = None  # the npz entry read

    def original_size(self) -> str:
        """The images' size as given, W×H ("64×48 (10), 32×32 (2)" when they differ); the latent grid for codes."""
        if self.images is None:
            assert self.codes is not None
            return f"{self.codes.shape[1]}×{self.codes.shape[2]} codes"
        sizes = Counter(f"{image.shape[1]}×{image.shape[0]}" for image in self.images)
        return next(iter(sizes)) if len(sizes) == 1 else ", ".join(f"{size} ({n})" for size, n in sizes.most_common())


def image_files(folder: Path) -> list[Path]:
    """PNG/JPEG files under ``folder`` (recursive), sorted by relative path."""
    files = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def folder_digest(folder: Path, files: list[Path]) -> str:
    """sha256 over "relative path NUL sha256 of the file" lines of every image file, in path order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def read_image(path: Path, key: str) -> np.ndarray:
    """RGB uint8 H×W×3 of an image file (any mode converted as the protocol converts real images)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ConfigError(key, f"{path} cannot be read as an image ({type(err).__name__}: {err}); replace or remove it") from None


def read_samples(path: Path, count: int, latent_shape: tuple[int, int], codebook_size: int, key: str = "--samples") -> OutsideSamples:
    """The first ``count`` samples of ``path`` (the protocol scores ``sampling.num_samples``, so fewer is an error),
    checked for shape, dtype, readability and, for codes, the benchmark's latent grid and codebook."""
    if not path.exists():
        raise ConfigError(key, f"{path} does not exist; give a folder of PNG/JPEG images, an .npz of uint8 images or an .npy of code grids")
    if path.is_dir():
        return _read_folder(path, count, key)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path, count, key)
    if suffix == ".npy":
        return _read_codes(path, count, latent_shape, codebook_size, key)
    raise ConfigError(
        key, f"{path} is neither a folder, an .npz nor an .npy; give PNG/JPEG images in a folder, an .npz of images or an .npy of codes"
    )


def _too_few(path: Path, found: int, count: int, key: str) -> ConfigError:
    return ConfigError(key, f"{path} holds {found} samples, the protocol scores {count} (sampling.num_samples, as every row): give at least {count}")


def _read_folder(folder: Path, count: int, key: str) -> OutsideSamples:
    files = image_files(folder)
    if not files:
        raise ConfigError(
            key, f"folder {folder} holds no PNG/JPEG images (searched recursively); give a folder of .png/.jpg files, an .npz or an .npy"
        )
    if len(files) < count:
        raise _too_few(folder, len(files), count, key)
    images = [read_image(path, key) for path in files[:count]]
    return OutsideSamples(folder, "image folder", folder_digest(folder, files), len(files), images, None)


def _load_array(path: Path, key: str, archive: bool = False) -> tuple[np.ndarray, str | None]:
    """The array of an .npy, or (archive) the first of ``NPZ_KEYS`` in an .npz, and the key read."""
    try:
        if not archive:
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as data:
            found = next((k for k in NPZ_KEYS if k in data.files), None)
            if found is None:
                raise ConfigError(
                    key,
                    f"{path} has no entry {' or '.join(repr(k) for k in NPZ_KEYS)} (entries: {', '.join(data.files) or 'none'}); store the images as arr_0",
                )
            return data[found], found
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(key, f"{path} cannot be read as a numpy file ({type(err).__name__}: {err}); write it with np.save/np.savez") from None


def _read_npz(path: Path, count: int, key: str) -> OutsideSamples:
    array, found = _load_array(path, key, archive=True)
    where = f"{path}[{found!r}]"
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ConfigError(key, f"{where} has shape {array.shape}; expected N×H×W×3 images (channels last, RGB)")
    if array.dtype != np.uint8:
        raise ConfigError(key, f"{where} has dtype {array.dtype}; expected uint8 pixels in 0..255 (convert with .astype(np.uint8) after scaling)")
    if min(array.shape[1:3]) < 1:
        raise ConfigError(key, f"{where} has shape {array.shape}: images of zero size")
    if len(array) < count:
        raise _too_few(path, len(array), count, key)
    images = list(array[:count])
    return OutsideSamples(path, "npz", sha256_file(path), len(array), images, None, found)


def _read_codes(path: Path, count: int, latent_shape: tuple[int, int], codebook_size: int, key: str) -> OutsideSamples:
    codes, _ = _load_array(path, key)
    h, w = latent_shape
    if codes.ndim != 3 or tuple(codes.shape[1:]) != (h, w):
        hint = "; images go in an .npz or a folder" if codes.ndim == 4 else ""
        raise ConfigError(key, f"{path} has shape {codes.shape}; expected N×{h}×{w} code grids of this benchmark's tokenizer{hint}")
    if codes.dtype.kind not in "iu":
        raise ConfigError(key, f"{path} has dtype {codes.dtype}; expected integer codes (e.g. int32/int64)")
    if len(codes) < count:
        raise _too_few(path, len(codes), count, key)
    used = codes[:count].astype(np.int64)
    if used.size and (used.min() < 0 or used.max() >= codebook_size):
        raise ConfigError(
            key, f"{path} holds codes in {used.min()}..{used.max()}, the tokenizer's codebook has {codebook_size} (0..{codebook_size - 1})"
        )
    return OutsideSamples(path, "codes", sha256_file(path), len(codes), None, used)


def fit_resolution(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize as the protocol resizes real images (``image_folder``): the shorter side (bicubic, reducing_gap 3) to
    the target, then a centre crop. An image of the target size is returned unchanged."""
    if image.shape[:2] == (height, width):
        return image
    pil = Image.fromarray(image)
    w, h = pil.size
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return np.asarray(pil.crop((left, top, left + width, top + height)), dtype=np.uint8)
