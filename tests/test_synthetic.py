"""Synthetic ReID datasets: deterministic, sized as specified, registered with torchreid."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_shapley.errors import ConfigError
from torchreid_shapley.manager import get_plugin_manager
from torchreid_shapley.plugins import synthetic

REPO = Path(__file__).resolve().parents[1]


GENERATION: dict[str, float] = {}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Every synthetic dataset, generated once for this module (seed 0)."""
    root = tmp_path_factory.mktemp("synthetic-cache")
    started = time.process_time()
    synthetic.generate_all(root, 0)
    GENERATION["cpu_seconds"] = time.process_time() - started
    return root


def tree_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_import_is_torch_free(tmp_path):
    code = textwrap.dedent("""
        import sys
        import torchreid_shapley.plugins.synthetic as s
        s.generate_all(sys.argv[1], 3, ["synth_prid"])
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchreid', 'torchvision')))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_generation_is_fast(cache):
    # CPU time (not wall time: a loaded CI machine must not fail it); about 4 s on a 2-core laptop
    seconds = GENERATION["cpu_seconds"]
    assert seconds < 20, f"generating every synthetic dataset took {seconds:.1f} s of CPU"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, cache):
    again = synthetic.ensure_generated(["synth_grid"], tmp_path / "a", 0)["synth_grid"]
    assert tree_digest(again) == tree_digest(synthetic.dataset_dir("synth_grid", cache, 0))
    other = synthetic.ensure_generated(["synth_grid"], tmp_path / "b", 1)["synth_grid"]
    assert other.name != again.name
    assert tree_digest(other) != tree_digest(again)
    manifest = synthetic.read_manifest(other)
    assert manifest["seed"] == 1 and manifest["fingerprint"] in other.name


@pytest.mark.parametrize("name", sorted(synthetic.SYNTHETIC_DATASETS))
def test_sizes_and_splits_as_specified(cache, name):
    spec = synthetic.SYNTHETIC_DATASETS[name]
    directory = synthetic.dataset_dir(name, cache, 0)
    manifest = synthetic.read_manifest(directory)
    train, query, gallery = manifest["train"], manifest["query"], manifest["gallery"]
    assert len(train) == spec.num_images == spec.train_ids * spec.images_per_id
    assert sorted({pid for _, pid, _ in train}) == list(range(spec.train_ids))  # torchreid's labels
    assert {cam for _, _, cam in train} <= set(range(spec.cameras))
    q_ids = {pid for _, pid, _ in query}
    g_ids = {pid for _, pid, _ in gallery}
    assert len(query) == len(q_ids) == spec.test_ids
    assert len(gallery) == spec.test_ids * spec.gallery_per_id + spec.distractors
    assert q_ids <= g_ids and not (q_ids | g_ids) & {pid for _, pid, _ in train}
    for _, pid, cam in query:  # a true match from another camera exists for every query
        assert any(p == pid and c != cam for _, p, c in gallery)
    assert synthetic.describe(name, cache, 0) == {"num_images": spec.num_images, "num_ids": spec.train_ids}
    combined = synthetic.describe(name, cache, 0, combineall=True)
    assert combined["num_images"] == len(train) + len(query) + len(gallery)
    assert combined["num_ids"] == spec.train_ids + spec.test_ids + spec.distractors
    for rel, _, _ in (train[0], query[0], gallery[-1]):
        with Image.open(directory / rel) as img:
            assert img.size == spec.domain.size[::-1] and img.mode == "RGB"


def test_paper_like_sizes():
    sizes = {n: s.num_images for n, s in synthetic.SYNTHETIC_DATASETS.items()}
    assert all(n.startswith("synth_") for n in sizes)
    assert min(sizes.values()) >= 40 and max(sizes.values()) <= 600
    assert max(sizes.values()) >= 8 * min(sizes.values())  # one large, some tiny
    assert len({s.domain for s in synthetic.SYNTHETIC_DATASETS.values()}) == len(sizes)  # one domain each


def _colour_feature(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("RGB").resize((16, 32)), dtype=float) / 255
    f = np.concatenate([a[i * 8:(i + 1) * 8, 4:12].reshape(-1, 3).mean(0) for i in range(4)])
    return f / np.linalg.norm(f)


def test_identity_shows_in_appearance_and_domains_differ(cache):
    """Same person in two cameras looks closer than two persons; datasets differ in colour."""
    means = {}
    for name in synthetic.SYNTHETIC_DATASETS:
        directory = synthetic.dataset_dir(name, cache, 0)
        manifest = synthetic.read_manifest(directory)
        feats = {}
        for rel, pid, _ in manifest["train"]:
            feats.setdefault(pid, []).append(_colour_feature(directory / rel))
        same = np.mean([f[0] @ f[1] for f in feats.values()])
        firsts = np.array([f[0] for f in feats.values()])
        sims = firsts @ firsts.T
        other = sims[~np.eye(len(firsts), dtype=bool)].mean()
        assert same > other + 0.01, (name, same, other)
        means[name] = np.mean([np.asarray(Image.open(directory / rel), dtype=float).mean((0, 1))
                               for rel, _, _ in manifest["train"][:40]], axis=0)
    names = sorted(means)
    gaps = [np.abs(means[a] - means[b]).max() for i, a in enumerate(names) for b in names[i + 1:]]
    assert min(gaps) > 5  # every pair of domains differs in mean colour


def test_idempotent_and_regenerates_what_is_missing(tmp_path):
    first = synthetic.ensure_generated(["synth_prid"], tmp_path, 5)["synth_prid"]
    stamp = (first / synthetic.MANIFEST).stat().st_mtime_ns
    started = time.perf_counter()
    assert synthetic.ensure_generated(["synth_prid"], tmp_path, 5)["synth_prid"] == first
    assert time.perf_counter() - started < 0.5
    assert (first / synthetic.MANIFEST).stat().st_mtime_ns == stamp
    digest = tree_digest(first)
    (first / synthetic.MANIFEST).unlink()  # an incomplete directory is drawn again
    synthetic.ensure_generated(["synth_prid"], tmp_path, 5)
    assert tree_digest(first) == digest
    leftovers = [p.name for p in first.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_spec_change_gets_a_new_directory(tmp_path, monkeypatch):
    before = synthetic.dataset_dir("synth_prid", tmp_path, 0)
    spec = synthetic.SYNTHETIC_DATASETS["synth_prid"]
    from dataclasses import replace
    monkeypatch.setitem(synthetic.SYNTHETIC_DATASETS, "synth_prid", replace(spec, train_ids=spec.train_ids + 1))
    assert synthetic.dataset_dir("synth_prid", tmp_path, 0) != before


@pytest.mark.slow
def test_concurrent_generation_is_safe(tmp_path):
    code = textwrap.dedent("""
        import sys
        from torchreid_shapley.plugins import synthetic
        d = synthetic.ensure_generated(["synth_grid", "synth_prid"], sys.argv[1], 2)
        print(synthetic.describe("synth_grid", sys.argv[1], 2)["num_images"])
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert all(o[0].strip() == "48" for o in outs)
    entries = sorted(p.name for p in (tmp_path / "synthetic").iterdir())
    assert len(entries) == 2 and not any(e.startswith(".") for e in entries)
    reference = synthetic.ensure_generated(["synth_grid"], tmp_path / "ref", 2)["synth_grid"]
    assert tree_digest(synthetic.dataset_dir("synth_grid", tmp_path, 2)) == tree_digest(reference)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(synthetic.CACHE_ENV, raising=False)
    assert synthetic.resolve_cache_dir("") == Path(os.path.expanduser("~/.cache/torchreid_shapley")).resolve()
    monkeypatch.setenv(synthetic.CACHE_ENV, str(tmp_path / "env"))
    assert synthetic.resolve_cache_dir("") == (tmp_path / "env").resolve()
    assert synthetic.resolve_cache_dir(tmp_path / "given") == (tmp_path / "given").resolve()
    assert synthetic.dataset_dir("synth_grid", "", 0).parent == (tmp_path / "env" / "synthetic").resolve()


def test_unknown_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="synth_market"):
        synthetic.describe("market1501", tmp_path, 0)


def test_describe_hook_answers_only_for_synthetic_names(cache):
    pm = get_plugin_manager(entry_points=False, env=False)
    config = {"shapley": {"cache_dir": str(cache), "synthetic_seed": 0}, "data": {"combineall": False}}
    assert synthetic.shapley_describe_train_sets(["synth_grid", "market1501"], config) is None
    assert synthetic.shapley_describe_train_sets([], config) is None
    counts = pm.hook.shapley_describe_train_sets(train_sets=["synth_grid", "synth_prid"], config=config)
    assert counts == {"synth_grid": {"num_images": 48, "num_ids": 24}, "synth_prid": {"num_images": 40, "num_ids": 20}}


def test_demo_settings_load_as_a_config():
    from torchreid_shapley.config import load_config

    cfg = load_config(None, synthetic.DEMO_OPTS)
    assert cfg.model.pretrained is False and cfg.model.name == "resnet18"
    assert synthetic.demo_config()["model.name"] == "resnet18"
    assert len(synthetic.DEMO_TRAIN_SETS) >= 4 and set(synthetic.DEMO_TARGETS) == set(synthetic.DEMO_TRAIN_SETS)
    assert set(synthetic.DEMO_TRAIN_SETS) <= set(synthetic.SYNTHETIC_DATASETS)


@pytest.mark.slow
def test_registered_with_torchreid_under_their_names(cache):
    from torchreid_shapley.plugins import torchreid_compat

    tr = torchreid_compat.load()
    pm = get_plugin_manager(entry_points=False, env=False)
    pm.hook.shapley_register_datasets(config={"shapley": {"cache_dir": str(cache), "synthetic_seed": 0}})
    synthetic.register_synthetic(cache, 0)  # a second registration is fine
    for name, spec in synthetic.SYNTHETIC_DATASETS.items():
        dataset = tr.data.datasets.init_image_dataset(name, root="ignored", mode="train", verbose=False)
        assert len(dataset.train) == spec.num_images and dataset.num_train_pids == spec.train_ids
        assert len(dataset.query) == spec.test_ids
        assert len(dataset.train[0]) == 4 and Path(dataset.train[0][0]).is_file()  # (path, pid, camid, dsetid)
    dm = tr.data.ImageDataManager(root="", sources=["synth_grid", "synth_prid"], targets=["synth_cuhk"],
                                  height=32, width=16, batch_size_train=8, workers=0, use_gpu=False)
    assert dm.num_train_pids == 24 + 20
    batch = next(iter(dm.train_loader))
    assert tuple(batch["img"].shape) == (8, 3, 32, 16)
