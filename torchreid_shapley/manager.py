"""Building the plugin manager: built-ins, entry points, ``--plugin`` modules. No global state."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Iterable, Sequence

import pluggy

from . import PROJECT, hookspecs
from .errors import ConfigError

#: Built-in plugins, registered exactly like third-party ones (by module, under their own names).
BUILTIN_PLUGINS = (
    "torchreid_shapley.plugins.plan",
    "torchreid_shapley.plugins.synthetic",
    "torchreid_shapley.plugins.torchreid_trainer",
)
ENV_PLUGINS = "TORCHREID_SHAPLEY_PLUGINS"


def plugin_modules_from_env(environ=os.environ) -> list[str]:
    return [m.strip() for m in environ.get(ENV_PLUGINS, "").split(",") if m.strip()]


def import_plugin(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"plugin module {name!r} cannot be imported ({exc}); check --plugin / "
                          f"{ENV_PLUGINS}, or install the package that provides it") from None


def get_plugin_manager(plugins: Sequence[str | object] = (), *, builtins: Iterable[str] = BUILTIN_PLUGINS,
                       entry_points: bool = True, env: bool = True) -> pluggy.PluginManager:
    """A new plugin manager with the hook specs, the built-ins, installed entry points and
    ``plugins`` (module names or objects). Each call builds a fresh one."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in builtins:
        pm.register(import_plugin(name), name=name)
    if entry_points:
        pm.load_setuptools_entrypoints(PROJECT)
    extra = list(plugins) + (plugin_modules_from_env() if env else [])
    for plugin in extra:
        module = import_plugin(plugin) if isinstance(plugin, str) else plugin
        name = plugin if isinstance(plugin, str) else None
        if pm.is_registered(module) or (name and pm.get_plugin(name) is not None):
            continue
        pm.register(module, name=name)
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """name, module and implemented hooks of every registered plugin (for ``plugins``)."""
    rows = []
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: x[0]):
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        dist = dists.get(id(plugin))
        rows.append({"name": name, "module": module, "hooks": hooks,
                     "distribution": f"{dist.project_name} {dist.version}" if dist else None})
    return rows
