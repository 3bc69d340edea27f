"""Every hook has a test, is documented in the README, and a third-party plugin can override."""

from __future__ import annotations

import inspect
import json
import os
import re
import textwrap
from pathlib import Path

import pytest

import torchreid_shapley
from torchreid_shapley import hookimpl, hookspecs
from torchreid_shapley.manager import describe_plugins, get_plugin_manager
from torchreid_shapley.runner import prepare_study, run_study

from conftest import REPO, run_cli
from test_runner import env

import shapley_test_trainer

HOOKS = sorted(name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("shapley_"))


def test_every_hook_is_named_typed_and_documented():
    assert HOOKS == ["shapley_add_arguments", "shapley_build_datamanager", "shapley_build_engine",
                     "shapley_build_model", "shapley_build_plan", "shapley_describe_train_sets",
                     "shapley_observe_run", "shapley_register_datasets", "shapley_report_sections",
                     "shapley_train_coalition"]
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and len(fn.__doc__) > 80, name
        assert inspect.signature(fn).return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(fn).parameters.values())
        first = getattr(fn, "torchreid_shapley_spec").get("firstresult", False)
        assert ("*First result*" in fn.__doc__) == first, name


def test_every_hook_is_documented_in_the_readme_plugin_section():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Plugins", 1)[1].split("\n## ", 1)[0]
    for name in HOOKS:
        assert f"`{name}" in section, f"{name} is not documented in the README's Plugins section"


def test_no_global_plugin_manager():
    a, b = get_plugin_manager(), get_plugin_manager()
    assert a is not b
    a.register(shapley_test_trainer)
    assert not b.is_registered(shapley_test_trainer)


def test_builtins_are_registered_like_plugins():
    pm = get_plugin_manager(entry_points=False)
    names = {row["name"] for row in describe_plugins(pm)}
    assert {"torchreid_shapley.plugins.plan", "torchreid_shapley.plugins.torchreid_trainer"} <= names
    impls = {i.plugin_name: i for i in pm.hook.shapley_train_coalition.get_hookimpls()}
    assert impls["torchreid_shapley.plugins.torchreid_trainer"].trylast


class Recorder:
    """A plugin object implementing the observing hooks, for one test."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def shapley_register_datasets(self, config):
        self.calls.append(("register", config["train"]["max_epoch"]))

    @hookimpl
    def shapley_observe_run(self, record, study_dir):
        self.calls.append(("observe", record["status"], tuple(record["train_sets"]), study_dir))


def _config():
    from torchreid_shapley.config import default_config, to_dict

    return to_dict(default_config())


def test_register_datasets_describe_and_observe_run_hooks(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TRAINER_FAIL", "ds1")
    pm = get_plugin_manager([shapley_test_trainer])
    rec = Recorder()
    pm.register(rec)
    spec, pm, manifest = prepare_study(out=str(tmp_path / "s"), train_sets=["ds0", "ds1"], targets=["ds0"],
                                       modes="without", seeds=[1], config=_config(), pm=pm, max_attempts=1)
    assert manifest["payload"]["train_sets"] == {"ds0": {"num_images": 100, "num_ids": 25},
                                                 "ds1": {"num_images": 200, "num_ids": 50}}
    summary = run_study(spec, pm=pm, use_bar=False, stream=open(os.devnull, "w"))
    assert summary.trained == 1 and summary.failed == 1  # players of ds0 without ds0: {ds1}
    observed = sorted(c[1:3] for c in rec.calls if c[0] == "observe")
    assert observed == [("failed", ("ds1",)), ("ok", ())]
    records = [json.loads(p.read_text()) for p in (tmp_path / "s" / "runs").glob("*.json")]
    assert records[0]["num_images"] == {} and records[0]["train_sets"] == []
    assert ("register", 60) in rec.calls


def test_build_plan_hook_overrides_the_builtin_plan():
    class OnlyBorders:
        @hookimpl
        def shapley_build_plan(self, train_sets, targets, modes, seeds, config):
            from torchreid_shapley.plan import PlannedRun

            return [PlannedRun(tuple(sorted(train_sets)), s) for s in seeds] + [PlannedRun((), s) for s in seeds]

    pm = get_plugin_manager()
    pm.register(OnlyBorders())
    plan = pm.hook.shapley_build_plan(train_sets=["a", "b", "c"], targets=["a"], modes=["without"], seeds=[1],
                                      config={})
    assert [r.train_sets for r in plan] == [("a", "b", "c"), ()]


def test_add_arguments_hook_reaches_the_config(tmp_path):
    plugin = tmp_path / "flagplugin.py"
    plugin.write_text(textwrap.dedent('''
        import json, os
        from torchreid_shapley import hookimpl

        @hookimpl
        def shapley_add_arguments(parser, command):
            if command == "run":
                parser.add_argument("--crop-size", type=int, default=7)

        @hookimpl
        def shapley_register_datasets(config):
            with open(os.environ["FLAG_OUT"], "w") as fh:
                json.dump(config.get("plugin_options"), fh)
    '''))
    out = tmp_path / "flag.json"
    e = env(FLAG_OUT=out)
    e["PYTHONPATH"] += os.pathsep + str(tmp_path)
    proc = run_cli("-p", "shapley_test_trainer", "-p", "flagplugin", "run", "--out", tmp_path / "s", "-s", "ds0",
                   "-t", "ds0", "--crop-size", "9", env=e)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == {"crop_size": 9}
    manifest = json.loads((tmp_path / "s" / "study.json").read_text())
    assert manifest["payload"]["settings"]["plugin_options.crop_size"] == 9
    helped = run_cli("-p", "flagplugin", "run", "--help", env=e)
    assert "--crop-size" in helped.stdout


def test_plugins_command_lists_name_module_hooks():
    proc = run_cli("-p", "shapley_test_trainer", "plugins", "--format", "json", env=env())
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["shapley_test_trainer"]["hooks"] == ["shapley_describe_train_sets", "shapley_train_coalition"]
    assert rows["torchreid_shapley.plugins.plan"]["hooks"] == ["shapley_build_plan"]
    text = run_cli("plugins")
    assert "torchreid_shapley.plugins.torchreid_trainer" in text.stdout and "hooks" in text.stdout


def test_bad_plugin_module_is_a_clear_error():
    proc = run_cli("-p", "no_such_plugin_module", "plugins")
    assert proc.returncode == 2 and "plugin module 'no_such_plugin_module' cannot be imported" in proc.stderr


@pytest.fixture
def entry_point_package(tmp_path):
    """A tiny third-party package, installed by putting it and its dist-info on the path."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fancy_trainer.py").write_text(textwrap.dedent('''
        from torchreid_shapley import hookimpl

        @hookimpl
        def shapley_describe_train_sets(train_sets, config):
            return {t: {"num_images": 10 * (i + 1), "num_ids": 2} for i, t in enumerate(sorted(train_sets))}

        @hookimpl
        def shapley_train_coalition(job):
            acc = 0.1 + 0.2 * len(job.train_sets)
            return {"metrics": {t: {"mAP": acc, "rank1": acc} for t in job.targets}, "model": "fancy"}
    '''))
    info = site / "fancy_trainer-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-trainer\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[torchreid_shapley]\nfancy = fancy_trainer\n")
    (info / "RECORD").write_text("")
    return site


def test_entry_point_plugin_overrides_the_default_trainer(tmp_path, entry_point_package):
    e = dict(os.environ, PYTHONPATH=str(entry_point_package))
    listed = run_cli("plugins", "--format", "json", env=e)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["fancy"]["distribution"] == "fancy-trainer 1.0"
    proc = run_cli("run", "--out", tmp_path / "s", "-s", "x", "y", "-t", "x", env=e)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "s" / "runs").glob("*.json")]
    assert len(records) == 4 and {r["model"] for r in records} == {"fancy"}
    assert sorted(r["metrics"]["x"]["mAP"] for r in records) == pytest.approx([0.1, 0.3, 0.3, 0.5])
