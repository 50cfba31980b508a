"""The microscope's image set, listed lazily and cut into shards.

Folders are walked with ``os.scandir`` as a generator (directory order, sub-folders after the files of
their parent), so a folder of a million paths is never held in memory; files and bundled names are taken
as given. A shard is a run of consecutive paths: the unit of work of both engines and of ``--resume``,
which redoes a shard whose stored paths differ from the listing's.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnviz.core.images import SUFFIXES, bundled_images, image_path
from cnnviz.errors import CnnvizError

SHARD = 64
"""Images per shard: small enough that a killed run loses little, large enough to batch well."""


@dataclass(frozen=True)
class Shard:
    """Consecutive paths of the listing; image ``i`` of the shard has the set-wide id ``first + i``."""

    index: int
    first: int
    paths: tuple[str, ...]

    @property
    def key(self) -> str:
        """A digest of the shard's paths: a stored shard is reused only for the same paths."""
        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()[:16]


def default_sources() -> list[str]:
    """Every bundled image (photos, paintings, textures)."""
    return [str(p) for p in bundled_images().values()]


def check_sources(sources: Sequence[str | Path]) -> list[Path]:
    """Each source as a folder or an image file (bundled names resolved), checked before any work: a missing
    path is an error, and so is a folder with no image in it (found by reading until the first one)."""
    if not sources:
        raise CnnvizError("--images needs at least one folder, file or bundled image name")
    checked = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            if next(walk([path]), None) is None:
                raise CnnvizError(f"no images ({', '.join(SUFFIXES)}) under {path}")
            checked.append(path)
        else:
            checked.append(image_path(source))
    return checked


def walk(sources: Iterable[Path]) -> Iterator[str]:
    """Every image path under ``sources``, lazily: files by suffix, folders recursively."""
    for source in sources:
        if source.is_dir():
            yield from _folder(source)
        else:
            yield str(source)


def _folder(folder: Path) -> Iterator[str]:
    later = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                later.append(entry.path)
            elif os.path.splitext(entry.name)[1].lower() in SUFFIXES and entry.is_file():
                yield entry.path
    for sub in later:
        yield from _folder(Path(sub))


def shards(paths: Iterable[str], size: int = SHARD) -> Iterator[Shard]:
    """The listing in shards of ``size`` paths, lazily."""
    it = iter(paths)
    for index in itertools.count():
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield Shard(index, index * size, chunk)
