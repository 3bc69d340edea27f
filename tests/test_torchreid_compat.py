"""torchreid_compat: the PyPI layout, an emulated source install, and a missing torchreid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchreid_shapley.plugins import torchreid_compat

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, *, path: list[str] = (), env: dict | None = None, timeout: float = 240):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(REPO), full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=str(REPO), timeout=timeout)


def test_import_does_not_import_torch():
    proc = run_python("""
        import sys
        import torchreid_shapley.plugins.torchreid_compat
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchreid')))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_pypi_layout_is_found_and_cached():
    tr = torchreid_compat.load()
    assert tr is torchreid_compat.load()
    assert tr.layout == "pypi" and tr.prefix == "torchreid.reid"
    assert tr.version and tr.code_version
    for name in torchreid_compat.MODULES:
        assert getattr(tr, name).__name__ == f"torchreid.reid.{name}"
    assert callable(tr.data.ImageDataManager) and callable(tr.data.register_image_dataset)
    assert callable(tr.models.build_model) and callable(tr.metrics.evaluate_rank)
    assert callable(tr.metrics.compute_distance_matrix) and callable(tr.optim.build_optimizer)
    assert hasattr(tr.engine, "ImageSoftmaxEngine") and hasattr(tr.engine, "ImageTripletEngine")


BLOCKER = """
import sys
class Blocker:
    def __init__(self, names): self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker(%r))
"""


def test_missing_torchreid_names_the_pip_command():
    proc = run_python(BLOCKER % (["torchreid"],) + """
from torchreid_shapley.plugins import torchreid_compat
try:
    torchreid_compat.load()
except Exception as exc:
    print(type(exc).__name__, exc)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ConfigError")
    assert "pip install torchreid" in proc.stdout


@pytest.mark.slow
def test_missing_dependency_of_torchreid_is_named():
    proc = run_python(BLOCKER % (["tensorboard"],) + """
from torchreid_shapley.plugins import torchreid_compat
try:
    torchreid_compat.load()
except Exception as exc:
    print(type(exc).__name__, exc)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ConfigError")
    assert "tensorboard" in proc.stdout and "pip install tensorboard" in proc.stdout


def make_source_layout(root: Path) -> Path:
    """A fake source install: ``torchreid.data``, ``torchreid.models``, ... re-export the PyPI package's
    ``torchreid.reid.*`` modules, and ``torchreid.reid`` itself cannot be found by name."""
    real = Path(torchreid_compat.load().data.__file__).resolve().parents[2]  # .../site-packages/torchreid
    pkg = root / "torchreid"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(f"""
        # Emulates a deep-person-reid source checkout for tests (no code of its own).
        import importlib
        __version__ = "1.4.0+source-emulation"
        _REAL = {str(real)!r}

        def _real(name):
            __path__.append(_REAL)  # reachable only while the PyPI modules load
            try:
                return importlib.import_module("torchreid.reid." + name)
            finally:
                __path__.remove(_REAL)
    """))
    for name in torchreid_compat.MODULES:
        (pkg / f"{name}.py").write_text(textwrap.dedent(f"""
            import sys
            import torchreid
            sys.modules[__name__] = torchreid._real({name!r})
        """))
    return root


@pytest.mark.slow
def test_emulated_source_layout_builds_trains_and_evaluates(tmp_path):
    fake = make_source_layout(tmp_path / "src")
    cache = tmp_path / "cache"
    proc = run_python(f"""
        import json, sys
        from torchreid_shapley.plugins import torchreid_compat
        tr = torchreid_compat.load()
        import torchreid
        assert torchreid.__file__.startswith({str(fake)!r}), torchreid.__file__
        from torchreid_shapley.jobs import TrainJob
        from torchreid_shapley.plugins import synthetic, torchreid_trainer
        config = {{"model": {{"name": "osnet_x0_25", "pretrained": False, "load_weights": ""}},
                  "data": {{"root": "", "height": 32, "width": 16, "workers": 0, "transforms": ["random_flip"],
                           "sources": ["synth_prid"], "targets": ["synth_grid"], "combineall": False}},
                  "train": {{"max_epoch": 1, "batch_size": 16, "lr": 0.003, "optim": "adam"}},
                  "test": {{"batch_size": 100, "dist_metric": "cosine", "normalize_feature": True}},
                  "loss": {{"name": "softmax"}},
                  "shapley": {{"schedule": "epochs", "cache_dir": {str(cache)!r}, "image_cache": True,
                              "synthetic_seed": 0}}}}
        result = torchreid_trainer.train_coalition(TrainJob(train_sets=("synth_prid",), seed=1,
                                                            targets=("synth_grid",), config=config))
        print(json.dumps({{"layout": tr.layout, "data": tr.data.__name__, "version": tr.version,
                          "steps": result["steps"], "metrics": result["metrics"],
                          "versions": result["versions"]}}))
    """, path=[fake])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["layout"] == "source" and out["version"] == "1.4.0+source-emulation"
    assert out["data"] == "torchreid.reid.data"  # the re-exported module
    assert out["versions"]["torchreid_layout"] == "source"
    assert out["steps"] == 40 // 16
    assert 0.0 <= out["metrics"]["synth_grid"]["mAP"] <= 1.0
