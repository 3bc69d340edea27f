"""A per-process cache of decoded images for torchreid datasets.

A study trains many models on overlapping train-sets and evaluates each on the same targets, so
the same files are opened and decoded again and again. :func:`cached_reads` swaps torchreid's
``read_image`` (the function its ``ImageDataset.__getitem__`` calls) for a cached one while the
context is active and puts the original back afterwards. Entries are keyed by
``(path, mtime, size)``, so a rewritten file is read again; every read returns a fresh copy, so
transforms can never change a cached image. The cache holds at most
``$TORCHREID_SHAPLEY_IMAGE_CACHE_MB`` MiB (default 2048) and drops the least recently used images
beyond that.

Loader worker processes started with ``fork`` inherit the cache as it was when they started;
:func:`warm` fills it in the parent first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from typing import Iterable, Iterator

CACHE_MB_ENV = "TORCHREID_SHAPLEY_IMAGE_CACHE_MB"
DEFAULT_CACHE_MB = 2048


class ImageCache:
    """LRU of decoded RGB PIL images, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(path: str):
        st = os.stat(path)
        return (os.fspath(path), st.st_mtime_ns, st.st_size)

    def get(self, path: str, read):
        """The decoded image of ``path`` (a copy), decoding it with ``read(path)`` on a miss."""
        try:
            key = self.key(path)
        except OSError:
            return read(path)  # let torchreid raise its own error for a missing file
        with self._lock:
            img = self._items.get(key)
            if img is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return img.copy()
        img = read(path)
        img.load()
        size = img.width * img.height * len(img.getbands())
        with self._lock:
            self.misses += 1
            if size <= self.max_bytes and key not in self._items:
                self._items[key] = img
                self._bytes += size
                while self._bytes > self.max_bytes and self._items:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.width * old.height * len(old.getbands())
        return img.copy()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses,
                    "max_bytes": self.max_bytes}


def _max_bytes() -> int:
    try:
        mb = float(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB))
    except ValueError:
        mb = DEFAULT_CACHE_MB
    return int(max(0.0, mb) * 1024 * 1024)


CACHE = ImageCache(_max_bytes())

_patch_lock = threading.Lock()
_patch_depth = 0
_patched: list[tuple[object, object]] = []  # (module, original read_image)


def _reader_modules() -> list:
    """The torchreid modules whose global ``read_image`` the image datasets call."""
    from . import torchreid_compat
    import sys

    tr = torchreid_compat.load()
    modules = []
    for cls in (tr.data.ImageDataset, getattr(tr.data, "Dataset", None)):
        module = sys.modules.get(getattr(cls, "__module__", ""), None) if cls is not None else None
        if module is not None and callable(getattr(module, "read_image", None)) and module not in modules:
            modules.append(module)
    return modules


@contextlib.contextmanager
def cached_reads(enabled: bool = True) -> Iterator[ImageCache | None]:
    """Within the block, torchreid datasets read images through :data:`CACHE`.

    Reentrant; the original ``read_image`` is restored when the outermost block exits. Yields the
    cache (``None`` when ``enabled`` is false: nothing is patched).
    """
    global _patch_depth
    if not enabled:
        yield None
        return
    with _patch_lock:
        if _patch_depth == 0:
            for module in _reader_modules():
                original = module.read_image

                def cached_read_image(path, _original=original):
                    return CACHE.get(path, _original)

                cached_read_image.__wrapped__ = original
                module.read_image = cached_read_image
                _patched.append((module, original))
        _patch_depth += 1
    try:
        yield CACHE
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                while _patched:
                    module, original = _patched.pop()
                    module.read_image = original


def warm(paths: Iterable[str]) -> int:
    """Decode ``paths`` into the cache now (before loader workers fork); returns the count read."""
    from PIL import Image

    def read(path):
        with Image.open(path) as img:
            return img.convert("RGB")

    count = 0
    for path in paths:
        CACHE.get(path, read)
        count += 1
    return count


def stats() -> dict:
    return CACHE.stats()


def clear() -> None:
    CACHE.clear()
