"""Study configuration: torchreid's own config keys (yacs) plus a ``shapley`` section.

A deep-person-reid YAML config (``configs/*.yaml``) loads unchanged; trailing ``KEY VALUE`` pairs
on the command line override it, as in deep-person-reid's ``scripts/main.py``. The config reaches
plugins and workers as a plain dict. Its fingerprint covers everything that changes results and
leaves out paths, hosts, devices and worker counts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from yacs.config import CfgNode

from .errors import ConfigError

SCHEDULES = ("epochs", "iterations")

#: Config keys that never change results (paths, logging, hardware, loader processes).
NON_RESULT_KEYS = frozenset({
    "data.root", "data.save_dir", "data.workers", "use_gpu", "train.print_freq", "test.visrank",
    "test.visrank_topk", "test.visactmap", "test.eval_freq", "test.start_eval", "test.evaluate",
    "model.resume", "shapley.cache_dir", "shapley.image_cache",
})


def _node(**items: Any) -> CfgNode:
    node = CfgNode()
    for key, value in items.items():
        setattr(node, key, value)
    return node


def default_config() -> CfgNode:
    """torchreid's configuration keys with their usual defaults, plus ``shapley``."""
    cfg = CfgNode()
    cfg.model = _node(name="resnet50", pretrained=True, load_weights="", resume="")
    cfg.data = _node(type="image", root="reid-data", sources=["market1501"], targets=["market1501"],
                     workers=4, split_id=0, height=256, width=128, combineall=False,
                     transforms=["random_flip"], k_tfm=1, norm_mean=[0.485, 0.456, 0.406],
                     norm_std=[0.229, 0.224, 0.225], save_dir="log", load_train_targets=False)
    cfg.market1501 = _node(use_500k_distractors=False)
    cfg.cuhk03 = _node(labeled_images=False, classic_split=False, use_metric_cuhk03=False)
    cfg.sampler = _node(train_sampler="RandomSampler", train_sampler_t="RandomSampler", num_instances=4,
                        num_cams=1, num_datasets=1)
    cfg.video = _node(seq_len=15, sample_method="evenly", pooling_method="avg")
    cfg.train = _node(optim="adam", lr=0.0003, weight_decay=5e-4, max_epoch=60, start_epoch=0,
                      batch_size=32, fixbase_epoch=0, open_layers=["classifier"], staged_lr=False,
                      new_layers=["classifier"], base_lr_mult=0.1, lr_scheduler="single_step",
                      stepsize=[20], gamma=0.1, print_freq=20, seed=1)
    cfg.sgd = _node(momentum=0.9, dampening=0.0, nesterov=False)
    cfg.rmsprop = _node(alpha=0.99)
    cfg.adam = _node(beta1=0.9, beta2=0.999)
    cfg.loss = _node(name="softmax", softmax=_node(label_smooth=True),
                     triplet=_node(margin=0.3, weight_t=1.0, weight_x=0.0))
    cfg.test = _node(batch_size=100, dist_metric="euclidean", normalize_feature=False,
                     ranks=[1, 5, 10, 20], evaluate=False, eval_freq=-1, start_eval=0, rerank=False,
                     visrank=False, visrank_topk=10, visactmap=False)
    cfg.use_gpu = True
    cfg.shapley = _node(
        schedule="epochs",     # epochs: every coalition trains train.max_epoch epochs (the paper)
        iterations=0,          # iterations schedule: optimizer steps per coalition (0: from the full coalition)
        cache_dir="",          # synthetic datasets and decoded images ('' = ~/.cache/torchreid_shapley)
        image_cache=True,      # decode each image once per worker, shared across coalitions
        synthetic_seed=0,      # seed of the synthetic ReID datasets
    )
    return cfg


def load_config(config_file: str | None = None, opts: Sequence[str] = (), *,
                sources: Sequence[str] | None = None, targets: Sequence[str] | None = None,
                root: str | None = None, transforms: Sequence[str] | None = None,
                schedule: str | None = None, base: CfgNode | None = None) -> CfgNode:
    """Defaults, then the YAML file, then the command-line options, as ``scripts/main.py`` does."""
    cfg = (base or default_config()).clone()
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {config_file!r} does not exist; give the path of a torchreid "
                              "YAML config (--config-file)")
        cfg.set_new_allowed(True)  # keys of newer torchreid configs load unchanged
        try:
            cfg.merge_from_file(str(path))
        except Exception as exc:  # yacs raises bare Exceptions / KeyErrors / ValueErrors
            raise ConfigError(f"config file {config_file!r} cannot be merged: {exc}") from None
        finally:
            cfg.set_new_allowed(False)
    flags = [o for o in list(opts)[::2] if str(o).startswith("-")]
    if flags:
        raise ConfigError(f"option {flags[0]} comes after the trailing KEY VALUE pairs {list(opts)}; put every "
                          "--option before them (the KEY VALUE pairs go last)")
    if len(opts) % 2:
        raise ConfigError(f"trailing options must be KEY VALUE pairs, got an odd list {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as exc:
        message = exc.args[0] if exc.args else exc
        raise ConfigError(f"config option cannot be set: {message}; keys are torchreid's (e.g. "
                          "train.max_epoch 2, model.name osnet_x0_25) or shapley.*") from None
    if sources:
        cfg.data.sources = list(sources)
    if targets:
        cfg.data.targets = list(targets)
    if root:
        cfg.data.root = root
    if transforms:
        cfg.data.transforms = list(transforms)
    if schedule:
        cfg.shapley.schedule = schedule
    if cfg.shapley.schedule not in SCHEDULES:
        raise ConfigError(f"shapley.schedule {cfg.shapley.schedule!r} is not one of {list(SCHEDULES)}; "
                          "use --schedule epochs or --schedule iterations")
    return cfg


def to_dict(cfg: CfgNode | Mapping) -> dict:
    """A plain, JSON-able copy of a config."""
    if isinstance(cfg, CfgNode):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    return copy.deepcopy(cfg)


def flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def result_settings(config: Mapping) -> dict[str, Any]:
    """The flattened config without the keys that do not change results."""
    return {k: v for k, v in flatten(config).items() if k not in NON_RESULT_KEYS}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint_payload(config: Mapping, train_sets: Mapping[str, Mapping[str, int]],
                        targets: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Everything that changes results: settings, train-sets with their counts, targets, seeds."""
    settings = result_settings(config)
    settings.pop("data.sources", None)  # the pool is given below with its image counts
    settings.pop("data.targets", None)
    return {"settings": settings,
            "train_sets": {k: dict(v) for k, v in sorted(train_sets.items())},
            "targets": sorted(targets), "seeds": sorted(seeds)}


def fingerprint(payload: Mapping) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def diff_payloads(old: Mapping, new: Mapping) -> list[str]:
    """``key: old -> new`` for every flattened key that differs."""
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return lines
