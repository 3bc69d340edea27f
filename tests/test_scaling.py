"""The log curve (paper eq. 2): fit, diagnostics, inverse, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from torchreid_shapley.errors import FitRefused
from torchreid_shapley.scaling import data_scale, fit_log_curve


def test_fit_recovers_an_exact_log_curve():
    s = np.array([0, 200, 250, 450, 4428, 6308, 12936])
    a = np.where(s > 0, 0.07 * (np.log(np.maximum(s, 1)) - np.log(2.5)), 0.01)
    fit = fit_log_curve(s, a)
    assert fit.alpha == pytest.approx(0.07)
    assert fit.beta == pytest.approx(2.5)
    assert fit.r2 == pytest.approx(1.0)
    assert (fit.points, fit.min_images, fit.max_images) == (6, 200, 12936)  # the empty run is left out
    np.testing.assert_allclose(data_scale(fit, a[1:]), s[1:], rtol=1e-9)


def test_r2_and_residuals_of_a_noisy_fit():
    s = np.array([100, 200, 400, 800])
    a = np.array([0.10, 0.16, 0.17, 0.25])
    fit = fit_log_curve(s, a)
    x = np.log(s)
    slope, intercept = np.polyfit(x, a, 1)
    assert fit.alpha == pytest.approx(slope)
    assert fit.beta == pytest.approx(np.exp(-intercept / slope))
    res = fit.residuals(s, a)
    assert fit.r2 == pytest.approx(1 - np.sum(res ** 2) / np.sum((a - a.mean()) ** 2))
    assert fit.r2 < 1


@pytest.mark.parametrize("s,a,match", [
    ([0, 100, 100], [0.1, 0.2, 0.3], "two distinct image counts"),
    ([100, 200, 400], [0.3, 0.2, 0.1], "not positive"),
    ([100, 200, 400], [0.2, 0.2, 0.2], "not positive"),
])
def test_refused_fits(s, a, match):
    with pytest.raises(FitRefused, match=match):
        fit_log_curve(s, a)


def test_overflowing_inverse_is_refused():
    fit = fit_log_curve([1, 2], [0.0, 1e-5])
    with pytest.raises(FitRefused, match="overflows"):
        data_scale(fit, [1.0])
