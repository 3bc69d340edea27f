"""One place that knows where torchreid keeps its modules.

Two layouts exist: the PyPI package ``torchreid`` (deep-person-reid's code under ``torchreid.reid.*``)
and a source install of deep-person-reid (``torchreid.data``, ``torchreid.models``, ...). Everything
else in torchreid-shapley asks :func:`load` for the modules and never imports torchreid by path.

Importing this module imports neither torch nor torchreid; :func:`load` does, once per process.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from types import SimpleNamespace

from torchreid_shapley.errors import ConfigError

#: The sub-modules every layout provides, in the order they are imported.
MODULES = ("utils", "data", "models", "losses", "metrics", "optim", "engine")

INSTALL_HINT = ("pip install torchreid (the PyPI package), or install deep-person-reid from source: "
                "git clone https://github.com/KaiyangZhou/deep-person-reid && pip install -e deep-person-reid")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing and not missing.startswith("torchreid"):
            raise ConfigError(f"torchreid is installed but {name!r} cannot be imported: the module {missing!r} "
                              f"it needs is missing; install it (pip install {missing.split('.')[0]})") from None
        raise ConfigError(f"torchreid cannot be imported ({exc}); expected the PyPI package (torchreid.reid.*) "
                          f"or a source install of deep-person-reid (torchreid.data, ...); {INSTALL_HINT}") from None


def _version(package, layout: str) -> str:
    if layout == "source":  # a source checkout: its own __version__ is the truth
        return str(getattr(package, "__version__", "unknown"))
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("torchreid")
        except PackageNotFoundError:
            pass
    except ImportError:  # pragma: no cover - Python < 3.8
        pass
    return str(getattr(package, "__version__", "unknown"))


@functools.lru_cache(maxsize=None)
def load() -> SimpleNamespace:
    """torchreid's modules, whichever layout is installed (cached).

    Returns a namespace with ``data, models, engine, optim, metrics, utils, losses`` (the modules),
    ``layout`` (``"pypi"`` or ``"source"``), ``prefix`` (``"torchreid.reid"`` or ``"torchreid"``),
    ``version`` (the installed distribution's version) and ``code_version`` (deep-person-reid's own
    ``__version__``). Raises :class:`~torchreid_shapley.errors.ConfigError` when torchreid is missing.
    """
    with warnings.catch_warnings():
        # torchreid warns at import when its Cython rank evaluation is not compiled; the Python
        # fallback gives the same numbers.
        warnings.filterwarnings("ignore", message=".*Cython evaluation.*")
        return _load()


def _load() -> SimpleNamespace:
    if not _has_module("torchreid"):
        raise ConfigError(f"torchreid is not installed (import torchreid failed); it trains and evaluates the "
                          f"models of a study: {INSTALL_HINT}")
    package = _import("torchreid")  # a broken install fails here with the missing module named
    if _has_module("torchreid.reid") and _has_module("torchreid.reid.data"):
        layout, prefix = "pypi", "torchreid.reid"
    elif _has_module("torchreid.data"):
        layout, prefix = "source", "torchreid"
    else:
        raise ConfigError("the installed 'torchreid' has neither torchreid.reid.data (PyPI package) nor "
                          f"torchreid.data (deep-person-reid source install); reinstall it: {INSTALL_HINT}")
    modules = {name: _import(f"{prefix}.{name}") for name in MODULES}
    code = importlib.import_module(prefix)
    return SimpleNamespace(layout=layout, prefix=prefix, version=_version(package, layout),
                           code_version=str(getattr(code, "__version__", getattr(package, "__version__", "unknown"))),
                           **modules)
