"""The log curve of paper eq. 2 and the data-scale transform (design.md section 2).

``a = alpha * (ln s - ln beta)`` is fitted by ordinary least squares of the accuracy ``a`` on
``ln s`` over every coalition of a game with ``s > 0``. Its inverse
``f^-1(a) = beta * exp(a / alpha)`` turns an accuracy into "equivalent training images".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import FitRefused


@dataclass(frozen=True)
class LogCurve:
    """A fitted log curve with its diagnostics."""

    alpha: float
    beta: float
    r2: float
    points: int
    min_images: int
    max_images: int

    def accuracy(self, images):
        """f(s): the accuracy the curve predicts for ``images`` training images."""
        return self.alpha * (np.log(np.asarray(images, dtype=float)) - np.log(self.beta))

    def images(self, accuracy):
        """f^-1(a): the training images the curve needs to reach ``accuracy`` (data scale)."""
        return self.beta * np.exp(np.asarray(accuracy, dtype=float) / self.alpha)

    def residuals(self, images, accuracy):
        return np.asarray(accuracy, dtype=float) - self.accuracy(images)

    def equation(self, metric: str = "a") -> str:
        return f"{metric} = {self.alpha:.4g} * (ln s - ln {self.beta:.4g})"

    def to_dict(self) -> dict:
        return asdict(self)


def fit_log_curve(images, accuracy) -> LogCurve:
    """Least-squares fit of ``accuracy = alpha * (ln images - ln beta)``.

    ``images`` and ``accuracy`` are one point per coalition (its mean accuracy); points with
    ``images <= 0`` (the untrained model) are left out. Raises :class:`FitRefused` when fewer
    than two distinct image counts remain, when ``alpha <= 0`` or when the fit is not finite.
    """
    s = np.asarray(images, dtype=float).ravel()
    a = np.asarray(accuracy, dtype=float).ravel()
    keep = s > 0
    s, a = s[keep], a[keep]
    distinct = np.unique(s)
    if distinct.size < 2:
        raise FitRefused(
            f"the log curve needs at least two distinct image counts, got {distinct.size} "
            f"({', '.join(str(int(x)) for x in distinct) or 'none'}); add train-sets or coalitions of other sizes")
    x = np.log(s)
    x_mean, a_mean = x.mean(), a.mean()
    sxx = float(np.sum((x - x_mean) ** 2))
    alpha = float(np.sum((x - x_mean) * (a - a_mean)) / sxx)
    intercept = float(a_mean - alpha * x_mean)
    if not (np.isfinite(alpha) and np.isfinite(intercept)):
        raise FitRefused(f"the log-curve fit is not finite (alpha={alpha}, intercept={intercept})")
    if alpha <= 0:
        raise FitRefused(
            f"the fitted slope alpha = {alpha:.4g} is not positive: accuracy does not grow with the number "
            "of training images here, so accuracies cannot be converted to images; use the linear-scale values")
    beta = float(np.exp(-intercept / alpha))
    if not np.isfinite(beta) or beta <= 0:
        raise FitRefused(f"the log-curve fit gives beta = {beta}, not a positive finite number")
    ss_res = float(np.sum((a - (alpha * x + intercept)) ** 2))
    ss_tot = float(np.sum((a - a_mean) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return LogCurve(alpha=alpha, beta=beta, r2=r2, points=int(s.size),
                    min_images=int(s.min()), max_images=int(s.max()))


def data_scale(curve: LogCurve, values) -> np.ndarray:
    """g(S) = f^-1(v(S)) for every coalition value; refuses values that overflow."""
    with np.errstate(over="ignore"):
        g = curve.images(values)
    if not np.all(np.isfinite(g)):
        worst = float(np.max(np.asarray(values, dtype=float)))
        raise FitRefused(
            f"the data-scale transform overflows: accuracy {worst:.4g} / alpha {curve.alpha:.4g} is too "
            "large for exp(); the log curve does not describe these runs")
    return g
