"""image_cache: decoded images shared across trainings, patched in and out of torchreid cleanly."""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image

from torchreid_shapley.plugins import image_cache


def write(path, colour, size=(8, 16)):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def test_hits_misses_and_copies(tmp_path):
    cache = image_cache.ImageCache(10 ** 6)
    path = write(tmp_path / "a.png", (255, 0, 0))
    reads = []

    def read(p):
        reads.append(p)
        return Image.open(p).convert("RGB")

    first = cache.get(path, read)
    first.putpixel((0, 0), (0, 0, 0))  # a transform that writes into its input changes only its copy
    second = cache.get(path, read)
    assert reads == [path] and second.getpixel((0, 0)) == (255, 0, 0)
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1


def test_rewritten_file_is_read_again(tmp_path):
    cache = image_cache.ImageCache(10 ** 6)
    path = write(tmp_path / "a.png", (255, 0, 0))
    read = lambda p: Image.open(p).convert("RGB")  # noqa: E731
    assert cache.get(path, read).getpixel((0, 0)) == (255, 0, 0)
    write(tmp_path / "a.png", (0, 255, 0), size=(9, 16))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert cache.get(path, read).getpixel((0, 0)) == (0, 255, 0)


def test_bounded_in_bytes_least_recently_used_first(tmp_path):
    one = 8 * 16 * 3
    cache = image_cache.ImageCache(2 * one)
    read = lambda p: Image.open(p).convert("RGB")  # noqa: E731
    paths = [write(tmp_path / f"{i}.png", (i, i, i)) for i in range(3)]
    cache.get(paths[0], read)
    cache.get(paths[1], read)
    cache.get(paths[0], read)  # 0 is now the most recent
    cache.get(paths[2], read)  # evicts 1
    stats = cache.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 2 * one
    cache.get(paths[0], read)
    assert cache.stats()["hits"] == 2


def test_missing_file_raises_the_readers_error(tmp_path):
    cache = image_cache.ImageCache(10 ** 6)

    def read(p):
        raise IOError(f'"{p}" does not exist')

    with pytest.raises(IOError, match="does not exist"):
        cache.get(str(tmp_path / "nope.png"), read)


@pytest.mark.slow
def test_patches_torchreid_and_restores_it(tmp_path):
    from torchreid_shapley.plugins import torchreid_compat

    tr = torchreid_compat.load()
    module = image_cache._reader_modules()[0]
    original = module.read_image
    path = write(tmp_path / "x.png", (1, 2, 3))
    dataset = tr.data.ImageDataset([(path, 0, 0)], [(path, 0, 0)], [(path, 0, 1)], transform=None, verbose=False)
    image_cache.clear()
    with image_cache.cached_reads(True) as cache:
        assert module.read_image is not original
        with image_cache.cached_reads(True):  # reentrant
            dataset[0]
        assert module.read_image is not original
        item = dataset[0]
        assert item["img"].getpixel((0, 0)) == (1, 2, 3)
        assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 1
    assert module.read_image is original
    with image_cache.cached_reads(False) as nothing:
        assert nothing is None and module.read_image is original
    with pytest.raises(RuntimeError):
        with image_cache.cached_reads(True):
            raise RuntimeError("training failed")
    assert module.read_image is original
    assert image_cache.warm([path]) == 1
