"""The one image I/O module: load any common file into float RGB [0, 1] (1, 3, H, W), resize, save.

Bundled demo images can be named without a path (``astronaut``, ``starry_night``, ``brick``, ...).
Transparent images are composited on white; 16-bit files keep their full range; CMYK and palette
images are converted to RGB by Pillow. Every analyzer takes its images as a bundled name, a path
(``str`` or ``pathlib.Path``), a PIL image or a tensor (``as_image``). Images and sizes smaller than
``MIN_SIDE`` px are refused rather than upscaled from nothing: a 1×1 picture holds no structure to
analyse, and VGG's five poolings need 32 px to leave one position.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from cnnviz.core.files import atomic_write
from cnnviz.core.weights import ASSETS
from cnnviz.errors import CnnvizError, unknown

IMAGES = ASSETS / "images"
MIN_SIDE = 16
ImageSource = str | Path | Image.Image | Tensor
SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def bundled_images(kind: str | None = None) -> dict[str, Path]:
    """Bundled images by stem, optionally of one kind (content, style, texture)."""
    folders = [IMAGES / kind] if kind else sorted(p for p in IMAGES.iterdir() if p.is_dir())
    return {p.stem: p for folder in folders for p in sorted(folder.glob("*.jpg"))}


def image_path(name: str | Path) -> Path:
    """A file path, or the path of a bundled image given by its name."""
    try:
        path = Path(name).expanduser()
    except RuntimeError as err:
        raise CnnvizError(f"cannot find the image {name}: {err}") from None
    if path.is_file():
        return path
    bundled = bundled_images()
    if str(name) in bundled:
        return bundled[str(name)]
    if path.suffix or os.sep in str(name):
        raise CnnvizError(f"image not found: {path}")
    raise unknown("image (not a file, nor a bundled image)", str(name), bundled)


def _folder(source: str | Path) -> Path | None:
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # ~unknown-user: image_path says so
        return None
    return path if path.is_dir() else None


def image_set(sources: ImageSource | Sequence[ImageSource] | None = None) -> list[ImageSource]:
    """Expand an image set (one source or several): folders become the image files under them
    (recursively, by suffix, sorted), files and bundled names are checked, in-memory images kept; None is
    every bundled image, by name."""
    if sources is None:
        return list(bundled_images())
    if isinstance(sources, (str, Path, Tensor, Image.Image)):
        sources = [sources]
    found: list[ImageSource] = []
    for source in sources:
        if isinstance(source, (Tensor, Image.Image)):
            found.append(source)
        elif (folder := _folder(source)) is not None:
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
            if not files:
                raise CnnvizError(f"no images ({', '.join(SUFFIXES)}) under {folder}")
            found.extend(files)
        else:
            path = image_path(source)
            found.append(path if Path(source).expanduser() == path else str(source))  # a bundled image by name
    if not found:
        raise CnnvizError("the image set is empty")
    return found


def image_stem(source: ImageSource) -> str:
    """A short name for file names: the file's stem, or ``tensor`` / ``pil`` for in-memory images."""
    if isinstance(source, Tensor):
        return "tensor"
    if isinstance(source, Image.Image):
        return "pil"
    return image_path(source).stem


def source_name(source: ImageSource) -> str:
    """How a run record names its input: the name or path as given, or ``tensor`` / ``PIL image``."""
    if isinstance(source, Tensor):
        return "tensor"
    if isinstance(source, Image.Image):
        return "PIL image"
    return str(source)


def check_size(size: int | None, what: str = "--size") -> None:
    """A long side must be a whole number of at least ``MIN_SIDE`` px (None: keep the image's own)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIDE):
        raise CnnvizError(f"{what} must be a whole number of at least {MIN_SIDE} pixels, got {size}")


def as_image(source: ImageSource, size: int | None = None, device: torch.device | str = "cpu") -> Tensor:
    """Any accepted image as (1, 3, H, W) in [0, 1] on ``device``, long side ``size`` (None: as it is).

    A tensor may be (3, H, W) or (1, 3, H, W) with values in [0, 1]; a batch of several is refused
    (the analyzers explain one image at a time).
    """
    check_size(size)
    if isinstance(source, Tensor):
        image = source.detach()
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[1] != 3:
            raise CnnvizError(f"an image tensor must be (3, H, W) or (1, 3, H, W), got {tuple(source.shape)}")
        if image.shape[0] != 1:
            raise CnnvizError(f"one image at a time: got a batch of {image.shape[0]}; call once per image")
        if not torch.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise CnnvizError("an image tensor must hold finite values in [0, 1]")
        image = (image if image.is_floating_point() else image.float()).to(device)
        return resize(image, size) if size else image
    return load_image(source, size, device)


def _check_side(shape: tuple[int, ...], what: str) -> None:
    if min(shape) < MIN_SIDE:
        raise CnnvizError(f"{what} is {shape[-1]}x{shape[-2]} px: images need at least {MIN_SIDE} px on each side")


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
    check_size(size)
    if isinstance(source, Image.Image):
        img = source
        what = "the PIL image"
    else:
        what = f"image {source}"
        path = image_path(source)
        try:
            with Image.open(path) as opened:
                opened.load()
                img = opened.copy() if opened.mode != "P" else opened.convert("RGBA")
        except Image.DecompressionBombError as err:
            raise CnnvizError(f"image {path} is too large to read safely: {err}") from None
        except (UnidentifiedImageError, OSError) as err:
            raise CnnvizError(f"cannot read image {path}: {err}") from None
        except MemoryError:
            raise CnnvizError(f"image {path} does not fit in memory") from None
        except Exception as err:  # Pillow's decoders raise other kinds (SyntaxError, ValueError, ...) on damaged files
            raise CnnvizError(f"cannot read image {path}: damaged or unsupported "
                              f"({type(err).__name__}: {err})") from None
    _check_side((img.height, img.width), what)
    array = _to_rgb_array(img)
    if not np.isfinite(array).all():
        raise CnnvizError(f"{what} holds NaN pixel values")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).to(device)
    return resize(tensor, size) if size else tensor


def fit_size(shape: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(H, W) scaled so that the long side is ``long_side``."""
    h, w = shape
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(image: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize a (B, 3, H, W) tensor to a long side (int) or exact (H, W), antialiased bicubic."""
    target = fit_size(image.shape[-2:], size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == target:
        return image
    return F.interpolate(image, size=target, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def mix_channels(matrix: Tensor, image: Tensor) -> Tensor:
    """Each pixel's 3 channels times a 3×3 ``matrix`` (colour-space changes): (B, 3, H, W) -> (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def quantile(values: Tensor, q: float) -> Tensor:
    """The ``q`` quantile of each row of ``values`` (..., N), linearly interpolated as ``torch.quantile``
    does, but in the values' own dtype: torch's computes its ranks in float64, which MPS does not have."""
    n = values.shape[-1]
    position = q * (n - 1)
    low = int(position)
    below = values.kthvalue(low + 1, dim=-1).values
    above = values.kthvalue(min(low + 2, n), dim=-1).values
    return below + (position - low) * (above - below)


def to_pil(image: Tensor) -> Image.Image:
    """First image of a (B, 3, H, W) [0, 1] tensor as an 8-bit RGB Pillow image."""
    array = image.detach()[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def save_png(image: Tensor | Image.Image, path: str | Path) -> Path:
    """Save atomically as PNG."""
    pil = image if isinstance(image, Image.Image) else to_pil(image)
    return atomic_write(Path(path), lambda tmp: pil.save(tmp, format="PNG"))
