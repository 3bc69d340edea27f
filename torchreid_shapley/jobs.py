"""What the runner hands to the training hook for one coalition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional


@dataclass(frozen=True)
class TrainJob:
    """One training: the coalition, where and how to run it, and the study configuration."""

    train_sets: tuple[str, ...]          # sorted; () = the model as initialised, no training
    seed: int
    targets: tuple[str, ...]             # evaluate the trained model on every one of these
    config: Mapping[str, Any]            # the study configuration as a plain dict (config.to_dict)
    device: str = "cpu"                  # "cpu" or "cuda:N"
    attempt: int = 1
    workdir: str = ""                    # scratch directory of this training (deleted afterwards)
    study_dir: str = ""
    num_images: Mapping[str, int] = field(default_factory=dict)  # counts of the coalition's train-sets
    progress: Optional[Callable[[float, str], None]] = field(default=None, compare=False, repr=False)
    hook: Any = field(default=None, compare=False, repr=False)  # the plugin manager's hook relay (pm.hook)

    def report(self, fraction: float, message: str = "") -> None:
        """Report training progress (0..1) to the runner, if it listens."""
        if self.progress is not None:
            self.progress(fraction, message)
