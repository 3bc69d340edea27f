"""Hook specifications of torchreid-shapley, grouped by the phase of a study in which they run.

Plugins implement them with ``@torchreid_shapley.hookimpl`` and are found through the
``torchreid_shapley`` entry-point group, ``--plugin MODULE`` or the ``TORCHREID_SHAPLEY_PLUGINS``
environment variable (comma-separated modules). Built-in implementations live in
``torchreid_shapley.plugins`` and are registered exactly like third-party plugins; the defaults are
``trylast`` so that an installed plugin overrides them.

Hooks whose spec says *first result* stop at the first implementation that returns something
other than ``None``; the others call every implementation and return the list of results.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pluggy

from . import PROJECT

if TYPE_CHECKING:  # pragma: no cover - types only
    from .plan import PlannedRun
    from .jobs import TrainJob

hookspec = pluggy.HookspecMarker(PROJECT)


# -- command line ---------------------------------------------------------------------------------
@hookspec
def shapley_add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Add options to the parser of one sub-command (``run``, ``plan``, ``report``, ...).

    ``command`` names the sub-command whose parser this is. The parsed values of the options a
    plugin adds reach the other hooks in the study configuration, ``config["plugin_options"]``
    (``{dest: value}``), and count in the study fingerprint. Returns nothing.
    """


# -- datasets -------------------------------------------------------------------------------------
@hookspec
def shapley_register_datasets(config: Mapping[str, Any]) -> None:
    """Register datasets (for example with ``torchreid.data.register_image_dataset``).

    Called once per process (the launcher and every worker) before datasets are described or a
    training starts. ``config`` is the study configuration as a plain dict. Returns nothing.
    """


@hookspec(firstresult=True)
def shapley_describe_train_sets(train_sets: Sequence[str], config: Mapping[str, Any]
                                ) -> Mapping[str, Mapping[str, int]] | None:
    """Image and identity counts of each train-set, before any training.

    Returns ``{name: {"num_images": int, "num_ids": int}}`` for every name of ``train_sets``, or
    ``None`` to let the next implementation answer. *First result*. The counts enter the study
    fingerprint and the records.
    """


# -- plan -----------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def shapley_build_plan(train_sets: Sequence[str], targets: Sequence[str], modes: Sequence[str],
                       seeds: Sequence[int], config: Mapping[str, Any]) -> list["PlannedRun"] | None:
    """The distinct trainings a study needs, largest coalitions first.

    Returns a list of :class:`torchreid_shapley.plan.PlannedRun`, or ``None`` for the next
    implementation. *First result*. The built-in plan is every coalition a Shapley game of each
    (target, mode) needs, deduplicated across targets and modes, for each seed.
    """


# -- training -------------------------------------------------------------------------------------
@hookspec(firstresult=True)
def shapley_train_coalition(job: "TrainJob") -> Mapping[str, Any] | None:
    """Train one model on ``job.train_sets`` and evaluate it on every target of ``job.targets``.

    ``job`` carries the coalition, seed, targets, device, attempt, a scratch directory and the study
    configuration. Returns the measured part of a record: at least
    ``{"metrics": {target: {"mAP": x, "rank1": y, ...}}}`` with fractions in [0, 1], optionally
    ``num_ids``, ``steps`` and other keys; the runner adds ``schema_version``, ``train_sets``,
    ``num_images``, ``status``, ``seed``, timings, host and device. An empty ``train_sets`` means the
    model as initialised, evaluated without training. Raise an exception to fail the attempt.
    *First result*: the built-in torchreid trainer is ``trylast``, so a plugin's trainer wins.
    """


@hookspec(firstresult=True)
def shapley_build_datamanager(job: "TrainJob", config: Mapping[str, Any]) -> Any | None:
    """Build the torchreid data manager of one training (used by the built-in torchreid trainer).

    The built-in builds ``ImageDataManager(sources=job.train_sets, targets=job.targets, ...)`` from
    the torchreid config keys. A repo with its own data pipeline returns its own manager here (it
    must offer ``num_train_pids``, ``train_loader`` and ``test_loader[target]["query"|"gallery"]``
    like torchreid's), or ``None``. *First result*.
    """


@hookspec(firstresult=True)
def shapley_build_model(job: "TrainJob", datamanager: Any, config: Mapping[str, Any]) -> Any | None:
    """Build the model of one training (``torch.nn.Module`` returning features in eval mode).

    The built-in calls ``torchreid.models.build_model`` with ``num_classes`` from the data manager.
    *First result*.
    """


@hookspec(firstresult=True)
def shapley_build_engine(job: "TrainJob", datamanager: Any, model: Any, config: Mapping[str, Any]) -> Any | None:
    """Build the engine (optimizer, scheduler, loss) that trains the model of one training.

    The built-in builds torchreid's ``ImageSoftmaxEngine`` or ``ImageTripletEngine`` as
    ``loss.name`` says. The trainer calls the engine's per-epoch training; evaluation of every
    target is done by the trainer itself. *First result*.
    """


@hookspec
def shapley_observe_run(record: Mapping[str, Any], study_dir: str) -> None:
    """Called in the launcher after a run finished (``status`` ``ok``) or failed (``failed``).

    ``record`` is the record as published (schema version 1, plus ``attempt`` and, for a failure,
    ``error``); ``study_dir`` is the study directory. Returns nothing; exceptions are reported as
    warnings and never lose the record.
    """


# -- report ---------------------------------------------------------------------------------------
@hookspec
def shapley_report_sections(context: Mapping[str, Any]) -> list[Mapping[str, str]] | None:
    """Extra sections for the report.

    ``context`` is the report context (the same dict as ``report -o x.json`` writes). Return a list
    of sections ``{"title": str, "text": str}`` (plain text, escaped in HTML; ``text`` is Markdown in
    the .md report) or ``None``. Every plugin's sections are appended after the built-in ones.
    """
