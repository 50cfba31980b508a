"""The one image I/O module: load any common file into float RGB [0, 1] (1, 3, H, W), resize, save.

Bundled demo images can be named without a path (``astronaut``, ``starry_night``, ``brick``, ...).
Transparent images are composited on white; 16-bit files keep their full range; CMYK and palette
images are converted to RGB by Pillow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cnnviz.core.weights import ASSETS
from cnnviz.errors import CnnvizError, unknown

IMAGES = ASSETS / "images"


def bundled_images(kind: str | None = None) -> dict[str, Path]:
    """Bundled images by stem, optionally of one kind (content, style, texture)."""
    folders = [IMAGES / kind] if kind else sorted(p for p in IMAGES.iterdir() if p.is_dir())
    return {p.stem: p for folder in folders for p in sorted(folder.glob("*.jpg"))}


def image_path(name: str | Path) -> Path:
    """A file path, or the path of a bundled image given by its name."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    bundled = bundled_images()
    if str(name) in bundled:
        return bundled[str(name)]
    if path.suffix or os.sep in str(name):
        raise CnnvizError(f"image not found: {path}")
    raise unknown("image (not a file, nor a bundled image)", str(name), bundled)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> float32 RGB array in [0, 1], shape (H, W, 3)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if gray.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        return np.repeat((gray / peak)[..., None], 3, axis=2).clip(0, 1)
    if img.mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        return np.repeat(gray[..., None], 3, axis=2).clip(0, 1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_image(source: str | Path | Image.Image, size: int | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Load an image file (or a bundled image's name, or a PIL image) as (1, 3, H, W) in [0, 1].

    ``size`` resizes so that the long side has that many pixels.
    """
    if isinstance(source, Image.Image):
        img = source
    else:
        path = image_path(source)
        try:
            with Image.open(path) as opened:
                opened.load()
                img = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
        except (UnidentifiedImageError, OSError) as err:
            raise CnnvizError(f"cannot read image {path}: {err}") from None
    array = _to_rgb_array(img)
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).to(device)
    return resize(tensor, size) if size else tensor


def fit_size(shape: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(H, W) scaled so that the long side is ``long_side``."""
    h, w = shape
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(image: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize a (B, 3, H, W) tensor to a long side (int) or exact (H, W), antialiased bicubic."""
    if size is not None and isinstance(size, int) and size < 8:
        raise CnnvizError(f"image size must be at least 8 pixels, got {size}")
    target = fit_size(image.shape[-2:], size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == target:
        return image
    return F.interpolate(image, size=target, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def to_pil(image: Tensor) -> Image.Image:
    """First image of a (B, 3, H, W) [0, 1] tensor as an 8-bit RGB Pillow image."""
    array = image.detach()[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_png(image: Tensor | Image.Image, path: str | Path) -> Path:
    """Save atomically as PNG."""
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    return atomic_write(Path(path), lambda tmp: pil.save(tmp, format="PNG"))
