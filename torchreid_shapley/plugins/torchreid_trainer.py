"""The built-in trainer: one torchreid training per coalition, evaluated on every target.

For a coalition ``T`` it builds torchreid's ``ImageDataManager`` (sources ``T``, targets every
target), the model (``models.build_model``), optimizer and scheduler (``optim.build_*``) and the
engine (``ImageSoftmaxEngine`` / ``ImageTripletEngine`` per ``loss.name``), trains with the engine's
per-epoch ``train`` (never ``run``: no evaluation during training, no checkpoints, no TensorBoard
logs), then evaluates every target itself: query and gallery features in eval mode,
``metrics.compute_distance_matrix`` (``test.dist_metric``, ``test.normalize_feature``, optional
``test.rerank``) and ``metrics.evaluate_rank``, reported as fractions in [0, 1].

The empty coalition is the model as initialised, evaluated without training (``steps == 0``); its
data manager is built with the targets as sources purely to get their query/gallery loaders.

Schedules (``shapley.schedule``):

* ``epochs``: every coalition trains ``train.max_epoch`` epochs over its own images (the paper);
  larger coalitions make more optimizer steps.
* ``iterations``: every coalition makes the same number of optimizer steps: ``shapley.iterations``,
  or when that is 0, ``train.max_epoch * (N // train.batch_size)`` with ``N`` the train images of
  every train-set in ``data.sources``: the steps the full coalition makes under ``epochs`` with
  torchreid's default sampler. The steps are spread over ``train.max_epoch`` rounds, so the
  learning-rate schedule and ``train.fixbase_epoch`` count rounds as they count epochs; each round
  draws batches from the coalition's loader, starting a new pass whenever one ends.

The step count is returned as ``steps``. torchreid's console output goes to
``<workdir>/torchreid.log``. On a CPU, loaders use no worker processes (set
``$TORCHREID_SHAPLEY_CPU_WORKERS`` to change that); on a GPU, ``data.workers``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import random
import socket
import threading
import time
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from torchreid_shapley import hookimpl
from torchreid_shapley.errors import ConfigError

from . import image_cache, synthetic, torchreid_compat

RANKS = (1, 5, 10, 20)
SCHEDULES = ("epochs", "iterations")
CPU_WORKERS_ENV = "TORCHREID_SHAPLEY_CPU_WORKERS"
OFFLINE_ENV = "TORCHREID_SHAPLEY_OFFLINE"
DATASETS_DOC = "https://kaiyangzhou.github.io/deep-person-reid/datasets.html"
LOG_NAME = "torchreid.log"


# -- hooks -----------------------------------------------------------------------------------------
@hookimpl(trylast=True)
def shapley_train_coalition(job):
    return train_coalition(job)


@hookimpl(trylast=True)
def shapley_describe_train_sets(train_sets, config):
    return describe_train_sets(train_sets, config)


@hookimpl(trylast=True)
def shapley_build_datamanager(job, config):
    tr = torchreid_compat.load()
    device = resolve_device(job.device)
    sources = tuple(job.train_sets) or tuple(dict.fromkeys(job.targets))  # no training: targets' loaders only
    with _dataset_errors(sorted(set(sources) | set(job.targets)), config):
        return _data_manager(tr, config, sources, tuple(dict.fromkeys(job.targets)),
                             use_gpu=device.type == "cuda", workers=_loader_workers(config, device))


@hookimpl(trylast=True)
def shapley_build_model(job, datamanager, config):
    device = resolve_device(job.device)
    return build_model(torchreid_compat.load(), config, int(datamanager.num_train_pids),
                       use_gpu=device.type == "cuda")


@hookimpl(trylast=True)
def shapley_build_engine(job, datamanager, model, config):
    tr = torchreid_compat.load()
    optimizer, scheduler = _optimizer(tr, config, model)
    return _engine(tr, config, datamanager, model, optimizer, scheduler,
                   use_gpu=resolve_device(job.device).type == "cuda")


def _build(job, name: str, **kwargs):
    """A builder through the hooks (a repo's own builder wins), or the built-in one."""
    relay = getattr(job, "hook", None)
    if relay is not None:
        built = getattr(relay, f"shapley_build_{name}")(job=job, config=job.config, **kwargs)
        if built is not None:
            return built
    return globals()[f"shapley_build_{name}"](job=job, config=job.config, **kwargs)


# -- configuration helpers -------------------------------------------------------------------------
def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _synthetic_location(config: Mapping[str, Any]) -> tuple[str, int]:
    return (str(_get(config, "shapley.cache_dir", "") or ""), int(_get(config, "shapley.synthetic_seed", 0) or 0))


@contextlib.contextmanager
def _torchreid_output(workdir: str | None) -> Iterator[None]:
    """torchreid prints a lot: send it to ``<workdir>/torchreid.log`` (or nowhere)."""
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        target = open(os.path.join(workdir, LOG_NAME), "a", encoding="utf-8")
    else:
        target = open(os.devnull, "w")
    try:
        with contextlib.redirect_stdout(target):
            yield
    finally:
        target.close()


# -- datasets --------------------------------------------------------------------------------------
def registered_datasets(tr=None) -> dict[str, type]:
    """torchreid's image dataset registry ``{name: class}``."""
    tr = tr or torchreid_compat.load()
    module = tr.data.datasets if hasattr(tr.data, "datasets") else None
    registry = getattr(module, "__image_datasets", None) if module is not None else None
    if isinstance(registry, Mapping):
        return dict(registry)
    try:  # not reachable by name: torchreid's own error message lists the names
        tr.data.datasets.init_image_dataset("\0")
    except ValueError as exc:
        import ast
        text = str(exc)
        try:
            names = ast.literal_eval(text[text.index("["):text.rindex("]") + 1])
            return {n: None for n in names}
        except (ValueError, SyntaxError):
            pass
    return {}


def _register_synthetic_if_used(names: Sequence[str], config: Mapping[str, Any]) -> None:
    if any(synthetic.is_synthetic(n) for n in names):
        synthetic.register_synthetic(*_synthetic_location(config))


def check_datasets(names: Sequence[str], config: Mapping[str, Any], *, role: str = "dataset", tr=None) -> None:
    """Every name registered with torchreid, and the files of every real one under ``data.root``."""
    tr = tr or torchreid_compat.load()
    _register_synthetic_if_used(names, config)
    registry = registered_datasets(tr)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ConfigError(f"{role} {unknown[0]!r} is not a dataset registered with torchreid; registered image "
                          f"datasets: {sorted(registry)}; check the spelling of -s/-t (data.sources / "
                          "data.targets) or load the plugin that registers it (--plugin)")
    root = os.path.abspath(os.path.expanduser(str(_get(config, "data.root", "") or "")))
    for name in names:
        cls = registry.get(name)
        if synthetic.is_synthetic(name) or cls is None:
            continue
        rel = getattr(cls, "dataset_dir", None)
        if isinstance(rel, str) and rel and not os.path.isdir(os.path.join(root, rel)):
            raise ConfigError(_missing_files_message(name, root, os.path.join(root, rel), "directory not found"))


def _missing_files_message(name: str, root: str, path: str, detail: str) -> str:
    return (f"the files of dataset {name!r} are missing under data.root {root!r} ({path}: {detail}); expected "
            f"torchreid's layout <root>/{os.path.relpath(path, root).split(os.sep)[0]}/... as described at "
            f"{DATASETS_DOC}; download and extract the dataset there, or point --root (data.root) at the "
            "directory that holds it (datasets are never downloaded by torchreid-shapley)")


@contextlib.contextmanager
def _dataset_errors(names: Sequence[str], config: Mapping[str, Any]) -> Iterator[None]:
    """torchreid's errors about missing files or names, as ConfigErrors."""
    root = os.path.abspath(os.path.expanduser(str(_get(config, "data.root", "") or "")))
    try:
        yield
    except ValueError as exc:
        if "dataset name" in str(exc):
            raise ConfigError(f"a dataset of {list(names)} is not registered with torchreid ({exc}); check "
                              "-s/-t or load the plugin that registers it") from None
        raise
    except (RuntimeError, OSError) as exc:
        text = str(exc)
        if any(s in text for s in ("not found", "does not exist", "No such file", "manually prepared")):
            path = getattr(exc, "filename", None) or text
            raise ConfigError(_missing_files_message(", ".join(names), root, str(path).strip('"'), text)) from None
        raise


def _init_kwargs(func, candidates: Mapping[str, Any]) -> dict:
    """``candidates`` that ``func`` accepts (older torchreid versions take fewer keywords)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(candidates)
    return {k: v for k, v in candidates.items() if k in params}


def _dataset_options(config: Mapping[str, Any]) -> dict:
    return {
        "root": str(_get(config, "data.root", "") or ""),
        "split_id": int(_get(config, "data.split_id", 0) or 0),
        "combineall": bool(_get(config, "data.combineall", False)),
        "cuhk03_labeled": bool(_get(config, "cuhk03.labeled_images", False)),
        "cuhk03_classic_split": bool(_get(config, "cuhk03.classic_split", False)),
        "market1501_500k": bool(_get(config, "market1501.use_500k_distractors", False)),
    }


def describe_train_sets(train_sets: Sequence[str], config: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Train images and identities of each train-set, from the dataset objects torchreid builds."""
    names = list(dict.fromkeys(train_sets))
    combineall = bool(_get(config, "data.combineall", False))
    if names and all(synthetic.is_synthetic(n) for n in names):
        cache_dir, seed = _synthetic_location(config)
        return {n: synthetic.describe(n, cache_dir, seed, combineall=combineall) for n in names}
    tr = torchreid_compat.load()
    check_datasets(names, config, role="train-set", tr=tr)
    options = _dataset_options(config)
    out = {}
    with _torchreid_output(None), _dataset_errors(names, config):
        for name in names:
            kwargs = dict(options, transform=None, mode="train", verbose=False)
            dataset = tr.data.datasets.init_image_dataset(name, **kwargs)
            out[name] = {"num_images": len(dataset.train), "num_ids": int(dataset.num_train_pids)}
    return out


@functools.lru_cache(maxsize=32)
def _pool_images(sources: tuple[str, ...], frozen_config: str) -> int:
    import json
    config = json.loads(frozen_config)
    return sum(c["num_images"] for c in describe_train_sets(sources, config).values())


def iteration_budget(config: Mapping[str, Any]) -> int:
    """Optimizer steps of every coalition under the ``iterations`` schedule."""
    import json

    steps = int(_get(config, "shapley.iterations", 0) or 0)
    if steps < 0:
        raise ConfigError(f"shapley.iterations {steps} is negative; give a number of optimizer steps, or 0 for "
                          "train.max_epoch epochs of the full coalition")
    if steps:
        return steps
    sources = tuple(sorted(dict.fromkeys(_as_list(_get(config, "data.sources", [])))))
    if not sources:
        raise ConfigError("shapley.schedule iterations with shapley.iterations 0 needs data.sources (the train-sets "
                          "of the study, -s) to size the budget; set shapley.iterations N")
    relevant = {k: config.get(k) for k in ("data", "shapley", "cuhk03", "market1501")}
    total = _pool_images(sources, json.dumps(relevant, sort_keys=True, default=str))
    batch = int(_get(config, "train.batch_size", 32))
    return max(1, int(_get(config, "train.max_epoch", 1))) * max(1, total // max(1, batch))


# -- devices ---------------------------------------------------------------------------------------
def resolve_device(device: str | None):
    """``torch.device`` for ``"cpu"`` / ``"cuda"`` / ``"cuda:N"``; a clear error when CUDA is absent."""
    import torch

    name = str(device or "cpu").strip()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        try:
            index = int(name.split(":", 1)[1]) if ":" in name else 0
        except ValueError:
            raise ConfigError(f"device {name!r} is not a device; expected 'cpu' or 'cuda:N'") from None
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was requested but CUDA is not available here (torch "
                              f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); run on the CPU "
                              "(leave out --devices / set use_gpu False) or install a CUDA build of torch on a GPU "
                              "machine")
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"device {name!r} was requested but this machine has {count} CUDA device(s) "
                              f"(cuda:0..cuda:{count - 1}); pass an existing device to --devices")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    raise ConfigError(f"device {name!r} is not a device; expected 'cpu' or 'cuda:N'")


def _loader_workers(config: Mapping[str, Any], device) -> int:
    if device.type == "cpu":
        try:
            return max(0, int(os.environ.get(CPU_WORKERS_ENV, "0") or 0))
        except ValueError:
            return 0
    return max(0, int(_get(config, "data.workers", 4) or 0))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# -- pretrained weights ----------------------------------------------------------------------------
class MissingWeights(Exception):
    def __init__(self, path: str, url: str):
        super().__init__(path)
        self.path, self.url = path, url


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` answers within ``timeout`` (never hangs)."""
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return False
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


@contextlib.contextmanager
def guard_downloads() -> Iterator[None]:
    """Within the block, torchreid's weight downloads fail fast with :class:`MissingWeights` when the
    file is not cached and its host cannot be reached (instead of hanging or retrying)."""
    import torch.hub
    import torch.utils.model_zoo as model_zoo

    patched = []
    original_load = torch.hub.load_state_dict_from_url

    def load_url(url, model_dir=None, *args, file_name=None, **kwargs):
        directory = model_dir or os.path.join(torch.hub.get_dir(), "checkpoints")
        path = os.path.join(directory, file_name or os.path.basename(urlparse(url).path))
        if not os.path.isfile(path) and not _reachable(url):
            raise MissingWeights(path, url)
        return original_load(url, model_dir, *args, file_name=file_name, **kwargs)

    for module, attr in ((model_zoo, "load_url"), (torch.hub, "load_state_dict_from_url")):
        if hasattr(module, attr):
            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, load_url)
    try:
        import gdown
    except ImportError:
        gdown = None
    if gdown is not None and hasattr(gdown, "download"):
        original_gdown = gdown.download

        def download(url=None, output=None, *args, **kwargs):
            if output and not os.path.isfile(str(output)) and not _reachable(str(url)):
                raise MissingWeights(str(output), str(url))
            return original_gdown(url, output, *args, **kwargs)

        patched.append((gdown, "download", original_gdown))
        gdown.download = download
    try:
        yield
    finally:
        for module, attr, original in reversed(patched):
            setattr(module, attr, original)


def build_model(tr, config: Mapping[str, Any], num_classes: int, *, use_gpu: bool):
    """torchreid's ``models.build_model`` with clear errors for names and weights."""
    name = str(_get(config, "model.name", "resnet50"))
    loss = str(_get(config, "loss.name", "softmax"))
    pretrained = bool(_get(config, "model.pretrained", True))
    load_weights = str(_get(config, "model.load_weights", "") or "")
    if load_weights:
        load_weights = os.path.expanduser(load_weights)
        if not os.path.isfile(load_weights):
            raise ConfigError(f"model.load_weights {load_weights!r} is not a file; give the path of a torchreid "
                              "checkpoint, or leave model.load_weights empty")
        pretrained = False  # the given weights replace the ImageNet initialisation
    try:
        with guard_downloads():
            model = tr.models.build_model(name=name, num_classes=num_classes, loss=loss, pretrained=pretrained,
                                          use_gpu=use_gpu)
    except MissingWeights as missing:
        raise ConfigError(f"model.pretrained True: the ImageNet weights of {name!r} are not at {missing.path} and "
                          f"{urlparse(missing.url).hostname or missing.url} cannot be reached; set model.pretrained "
                          f"False or place the weights at {missing.path} (or model.load_weights PATH)") from None
    except KeyError as exc:
        raise ConfigError(f"model.name {name!r} is not a torchreid model ({exc.args[0] if exc.args else exc}); "
                          "pick one of torchreid's models, e.g. osnet_x0_25 or resnet50") from None
    if load_weights:
        tr.utils.load_pretrained_weights(model, load_weights)
    return model


# -- training --------------------------------------------------------------------------------------
class _Steps:
    """``n`` batches drawn from ``batches`` (an endless iterator shared across rounds)."""

    def __init__(self, batches: Iterator, n: int):
        self.batches, self.n = batches, int(n)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield next(self.batches)


def _endless(loader) -> Iterator:
    while True:
        count = 0
        for batch in loader:
            count += 1
            yield batch
        if count == 0:
            return


def _check_leak(config: Mapping[str, Any], train_sets: Sequence[str], targets: Sequence[str]) -> None:
    if not bool(_get(config, "data.combineall", False)):
        return
    pool = set(train_sets) | set(_as_list(_get(config, "data.sources", [])))
    leaking = sorted(pool & set(targets))
    if leaking:
        raise ConfigError(f"data.combineall True with target(s) {leaking} among the train-sets: combineall trains on "
                          "their query and gallery images, so the test images would leak into training; set "
                          "data.combineall False, or remove those targets")


def _data_manager(tr, config: Mapping[str, Any], sources: Sequence[str], targets: Sequence[str], *,
                  use_gpu: bool, workers: int):
    kwargs = dict(
        _dataset_options(config),
        sources=list(sources), targets=list(targets),
        height=int(_get(config, "data.height", 256)), width=int(_get(config, "data.width", 128)),
        transforms=_as_list(_get(config, "data.transforms", ["random_flip"])) or None,
        k_tfm=int(_get(config, "data.k_tfm", 1) or 1),
        norm_mean=_get(config, "data.norm_mean"), norm_std=_get(config, "data.norm_std"),
        use_gpu=use_gpu, load_train_targets=False,
        batch_size_train=int(_get(config, "train.batch_size", 32)),
        batch_size_test=int(_get(config, "test.batch_size", 100)),
        workers=workers,
        num_instances=int(_get(config, "sampler.num_instances", 4)),
        num_cams=int(_get(config, "sampler.num_cams", 1)),
        num_datasets=int(_get(config, "sampler.num_datasets", 1)),
        train_sampler=str(_get(config, "sampler.train_sampler", "RandomSampler")),
        train_sampler_t=str(_get(config, "sampler.train_sampler_t", "RandomSampler")),
    )
    return tr.data.ImageDataManager(**_init_kwargs(tr.data.ImageDataManager.__init__, kwargs))


def _engine(tr, config: Mapping[str, Any], datamanager, model, optimizer, scheduler, *, use_gpu: bool):
    loss = str(_get(config, "loss.name", "softmax"))
    label_smooth = bool(_get(config, "loss.softmax.label_smooth", True))
    if loss == "softmax":
        return tr.engine.ImageSoftmaxEngine(datamanager, model, optimizer=optimizer, scheduler=scheduler,
                                            use_gpu=use_gpu, label_smooth=label_smooth)
    if loss == "triplet":
        return tr.engine.ImageTripletEngine(
            datamanager, model, optimizer=optimizer, margin=float(_get(config, "loss.triplet.margin", 0.3)),
            weight_t=float(_get(config, "loss.triplet.weight_t", 1.0)),
            weight_x=float(_get(config, "loss.triplet.weight_x", 0.0)), scheduler=scheduler, use_gpu=use_gpu,
            label_smooth=label_smooth)
    raise ConfigError(f"loss.name {loss!r} is not supported; expected 'softmax' or 'triplet'")


def _optimizer(tr, config: Mapping[str, Any], model):
    kwargs = dict(
        optim=str(_get(config, "train.optim", "adam")), lr=float(_get(config, "train.lr", 0.0003)),
        weight_decay=float(_get(config, "train.weight_decay", 5e-4)),
        momentum=float(_get(config, "sgd.momentum", 0.9)), sgd_dampening=float(_get(config, "sgd.dampening", 0.0)),
        sgd_nesterov=bool(_get(config, "sgd.nesterov", False)), rmsprop_alpha=float(_get(config, "rmsprop.alpha", 0.99)),
        adam_beta1=float(_get(config, "adam.beta1", 0.9)), adam_beta2=float(_get(config, "adam.beta2", 0.999)),
        staged_lr=bool(_get(config, "train.staged_lr", False)),
        new_layers=_as_list(_get(config, "train.new_layers", ["classifier"])),
        base_lr_mult=float(_get(config, "train.base_lr_mult", 0.1)),
    )
    optimizer = _fused(tr.optim.build_optimizer(model, **_init_kwargs(tr.optim.build_optimizer, kwargs)))
    stepsize = _get(config, "train.stepsize", [20])
    scheduler = tr.optim.build_lr_scheduler(
        optimizer, lr_scheduler=str(_get(config, "train.lr_scheduler", "single_step")),
        stepsize=list(stepsize) if isinstance(stepsize, (list, tuple)) else int(stepsize),
        gamma=float(_get(config, "train.gamma", 0.1)), max_epoch=int(_get(config, "train.max_epoch", 1)))
    return optimizer, scheduler


def _fused(optimizer):
    """The same Adam/AdamW (same groups and hyper-parameters) with torch's fused kernel, where torch
    has one for the parameters' device: the update is the same, a step about 3x cheaper on a CPU."""
    import torch

    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return optimizer
    groups = [{k: v for k, v in group.items() if k not in ("foreach", "fused")} for group in optimizer.param_groups]
    try:
        return type(optimizer)(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without the kernel
        return optimizer


def _per_set_ids(train_data: Sequence, train_sets: Sequence[str]) -> dict[str, int] | None:
    """Identities per train-set from the combined train list (dataset index = 4th item)."""
    if not train_data or len(train_data[0]) < 4:
        return None
    ids: dict[int, set] = {}
    for item in train_data:
        ids.setdefault(int(item[3]), set()).add(item[1])
    if sorted(ids) != list(range(len(train_sets))):
        return None
    return {name: len(ids[i]) for i, name in enumerate(train_sets)}


# -- evaluation ------------------------------------------------------------------------------------
def _batch_fields(batch):
    if isinstance(batch, Mapping):
        return batch["img"], batch["pid"], batch["camid"]
    return batch[0], batch[1], batch[2]  # older torchreid: (img, pid, camid, path)


def extract_features(model, loader, device):
    """Features, pids and camids of every image of ``loader`` (model in eval mode)."""
    import numpy as np
    import torch

    feats, pids, camids = [], [], []
    with torch.no_grad():
        for batch in loader:
            imgs, pid, camid = _batch_fields(batch)
            out = model(imgs.to(device, non_blocking=True))
            if isinstance(out, (tuple, list)):  # a model that returns more than its features in eval mode
                out = out[0]
            feats.append(out.float().cpu())
            pids.extend(int(p) for p in pid)
            camids.extend(int(c) for c in camid)
    return torch.cat(feats, 0), np.asarray(pids), np.asarray(camids)


def evaluate_target(tr, model, query_loader, gallery_loader, config: Mapping[str, Any], device) -> dict[str, float]:
    """mAP and rank-k (fractions) of ``model`` on one target's query/gallery split."""
    import torch.nn.functional as F

    qf, q_pids, q_camids = extract_features(model, query_loader, device)
    gf, g_pids, g_camids = extract_features(model, gallery_loader, device)
    if bool(_get(config, "test.normalize_feature", False)):
        qf, gf = F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1)
    metric = str(_get(config, "test.dist_metric", "euclidean"))
    distmat = tr.metrics.compute_distance_matrix(qf, gf, metric)
    distmat = distmat.numpy()
    if bool(_get(config, "test.rerank", False)):
        qq = tr.metrics.compute_distance_matrix(qf, qf, metric).numpy()
        gg = tr.metrics.compute_distance_matrix(gf, gf, metric).numpy()
        distmat = tr.utils.re_ranking(distmat, qq, gg)
    cmc, mean_ap = tr.metrics.evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids,
        use_metric_cuhk03=bool(_get(config, "cuhk03.use_metric_cuhk03", False)))
    ranks = sorted(set(RANKS) | {int(r) for r in _as_list(_get(config, "test.ranks", []))})
    out = {"mAP": float(mean_ap)}
    for r in ranks:
        out[f"rank{r}"] = float(cmc[min(r, len(cmc)) - 1])
    return {k: min(1.0, max(0.0, v)) for k, v in out.items()}


# -- the training of one coalition -----------------------------------------------------------------
def train_coalition(job) -> dict:
    """Train on ``job.train_sets`` (nothing when empty) and evaluate on every target of ``job.targets``."""
    config = job.config
    train_sets = tuple(job.train_sets)
    targets = tuple(dict.fromkeys(job.targets))
    if not targets:
        raise ConfigError("no targets to evaluate; give at least one target (-t)")
    schedule = str(_get(config, "shapley.schedule", "epochs"))
    if schedule not in SCHEDULES:
        raise ConfigError(f"shapley.schedule {schedule!r} is not one of {list(SCHEDULES)}; use epochs or iterations")
    if str(_get(config, "data.type", "image")) != "image":
        raise ConfigError(f"data.type {_get(config, 'data.type')!r} is not supported; torchreid-shapley trains "
                          "image-reid models (data.type image)")
    max_epoch = int(_get(config, "train.max_epoch", 1))
    if train_sets and max_epoch < 1:
        raise ConfigError(f"train.max_epoch {max_epoch} trains nothing; give at least 1")
    tr = torchreid_compat.load()
    import torch

    device = resolve_device(job.device)
    _check_leak(config, train_sets, targets)
    check_datasets(list(train_sets), config, role="train-set", tr=tr)
    check_datasets([t for t in targets if t not in train_sets], config, role="target", tr=tr)
    budget = iteration_budget(config) if train_sets and schedule == "iterations" else None
    workers = _loader_workers(config, device)
    job.report(0.0, "building data loaders")
    seed_everything(int(job.seed))
    versions = {"torch": torch.__version__, "torchreid": tr.version, "torchreid_layout": tr.layout}

    with _torchreid_output(job.workdir), \
            image_cache.cached_reads(bool(_get(config, "shapley.image_cache", True))):
        datamanager = _build(job, "datamanager")
        if workers > 0 and bool(_get(config, "shapley.image_cache", True)):
            image_cache.warm(_loader_paths(datamanager, train_sets, targets))
        seed_everything(int(job.seed))  # the initial model does not depend on how the data were built
        model = _build(job, "model", datamanager=datamanager).to(device)

        steps, epochs, started = 0, 0.0, time.time()
        if train_sets:
            engine = _build(job, "engine", datamanager=datamanager, model=model)
            per_epoch = len(datamanager.train_loader)
            if per_epoch == 0:
                raise ConfigError(
                    f"train.batch_size {int(_get(config, 'train.batch_size', 32))} is larger than what the train "
                    f"loader of {list(train_sets)} can fill ({len(datamanager.train_loader.dataset)} images, last "
                    "incomplete batch dropped); lower train.batch_size")
            if schedule == "epochs":
                rounds = [per_epoch] * max_epoch
            else:
                rounds = [budget // max_epoch + (1 if e < budget % max_epoch else 0) for e in range(max_epoch)]
                batches = _endless(datamanager.train_loader)
            total = max(1, sum(rounds))
            engine.max_epoch = max_epoch
            engine.start_epoch = 0
            for epoch, n in enumerate(rounds):
                engine.epoch = epoch
                if schedule == "iterations":
                    engine.train_loader = _Steps(batches, n)
                engine.train(print_freq=int(_get(config, "train.print_freq", 20)),
                             fixbase_epoch=int(_get(config, "train.fixbase_epoch", 0)),
                             open_layers=_as_list(_get(config, "train.open_layers", ["classifier"])))
                steps += n
                job.report(0.9 * steps / total, f"epoch {epoch + 1}/{max_epoch}, {steps}/{total} steps")
            epochs = round(steps / per_epoch, 3)
        train_seconds = time.time() - started

        started = time.time()
        model.eval()
        metrics = {}
        for i, target in enumerate(targets):
            job.report(0.9 + 0.1 * i / len(targets), f"evaluating {target}")
            loaders = datamanager.test_loader[target]
            metrics[target] = evaluate_target(tr, model, loaders["query"], loaders["gallery"], config, device)
        eval_seconds = time.time() - started

    num_ids = {}
    if train_sets:
        num_ids = _per_set_ids(datamanager.train_loader.dataset.train, train_sets) or {
            k: v["num_ids"] for k, v in describe_train_sets(train_sets, config).items()}
    job.report(1.0, "done")
    return {
        "metrics": metrics, "num_ids": num_ids, "steps": int(steps), "epochs": epochs,
        "model": str(_get(config, "model.name", "")), "schedule": schedule, "device": str(device),
        "train_seconds": round(train_seconds, 3), "eval_seconds": round(eval_seconds, 3), "versions": versions,
    }


def _loader_paths(datamanager, train_sets: Sequence[str], targets: Sequence[str]) -> list[str]:
    paths = []
    if train_sets:
        paths.extend(item[0] for item in datamanager.train_loader.dataset.train)
    for target in targets:
        for split in ("query", "gallery"):
            paths.extend(item[0] for item in datamanager.test_loader[target][split].dataset.data)
    return [p for p in paths if isinstance(p, str)]
