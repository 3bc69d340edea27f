"""A deep-person-reid style training script that gained ``--shapley`` with three lines.

Without ``--shapley`` it trains one model on all ``--sources`` and evaluates it on ``--targets``,
as a repo's own ``scripts/main.py`` does. With ``--shapley`` it runs a whole data-contribution
study instead, keeping this repo's own model builder (``shapley_build_model`` below), and writes
the report. Try it on the synthetic datasets (no data needed)::

    python examples/reid_main.py -s synth_grid synth_prid -t synth_grid synth_prid \\
        --shapley --shapley-out /tmp/reid-study \\
        model.name osnet_x0_25 model.pretrained False data.height 64 data.width 32 train.max_epoch 1
"""

from __future__ import annotations

import argparse
import sys

from torchreid_shapley import add_shapley_arguments, hookimpl, run_shapley  # (1) the import
from torchreid_shapley.config import load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config-file", default="", help="path to a config file")
    parser.add_argument("-s", "--sources", nargs="+", help="source datasets")
    parser.add_argument("-t", "--targets", nargs="+", help="target datasets")
    parser.add_argument("--transforms", nargs="+", help="data augmentation")
    parser.add_argument("--root", default="", help="path to the data root")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, help="modify config options")
    return parser


# -- this repo's own builder, used for every coalition of a study -----------------------------------
def build_my_model(name: str, num_classes: int, pretrained: bool):
    """The repo's model factory (here: torchreid's, with a dropout before the classifier)."""
    import torch.nn as nn

    from torchreid_shapley.plugins.torchreid_compat import load as load_torchreid

    model = load_torchreid().models.build_model(name=name, num_classes=num_classes, loss="softmax",
                                                pretrained=pretrained)
    if hasattr(model, "classifier"):
        model.classifier = nn.Sequential(nn.Dropout(0.1), model.classifier)
    model.built_by = "reid_main.build_my_model"
    return model


@hookimpl
def shapley_build_model(job, datamanager, config):
    print(f"reid_main: building the model of {'+'.join(job.train_sets) or 'the untrained coalition'} "
          "with the repo's own builder", file=sys.stderr, flush=True)
    return build_my_model(config["model"]["name"], max(1, datamanager.num_train_pids),
                          bool(config["model"]["pretrained"]))


def train_once(cfg) -> None:
    """The script's usual job: one training on every source, evaluated on every target."""
    from torchreid_shapley.jobs import TrainJob
    from torchreid_shapley.config import to_dict
    from torchreid_shapley.manager import get_plugin_manager

    pm = get_plugin_manager([sys.modules[__name__]])
    config = to_dict(cfg)
    pm.hook.shapley_register_datasets(config=config)
    job = TrainJob(train_sets=tuple(sorted(config["data"]["sources"])), seed=int(config["train"]["seed"]),
                   targets=tuple(config["data"]["targets"]), config=config)
    result = pm.hook.shapley_train_coalition(job=job)
    for target, metrics in result["metrics"].items():
        print(f"{target}: mAP {metrics['mAP']:.1%}, rank-1 {metrics['rank1']:.1%}")


def main() -> None:
    parser = build_parser()
    add_shapley_arguments(parser)                                               # (2) the options
    args = parser.parse_args()
    cfg = load_config(args.config_file or None, args.opts or [], sources=args.sources, targets=args.targets,
                      root=args.root or None, transforms=args.transforms)
    if args.shapley:                                                            # (3) the study
        sys.exit(run_shapley(cfg, args, plugins=[sys.modules[__name__]]))
    train_once(cfg)


if __name__ == "__main__":
    main()
