"""Drift statistics of mura_core.monitoring on samples whose truth is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats

from mura_core.decisions import flagged
from mura_core.errors import ConfigError
from mura_core.monitoring.drift import Bands, alerts, category_psi, drift, mix_test, psi
from mura_core.monitoring.inputs import Inputs
from mura_core.monitoring.snapshot import Snapshot, load_reference, save_reference

PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
MIX = np.array([0.13, 0.14, 0.08, 0.15, 0.08, 0.22, 0.20])


def night(rng: np.random.Generator, studies: int, *, invert: bool = False, parts=None) -> Snapshot:
    """A population like the reference: Beta scores, intensities around 70, MURA's mix."""
    prob = rng.beta(2, 3, studies)
    body = parts if parts is not None else rng.choice(PARTS, studies, p=MIX / MIX.sum())
    means = rng.normal(70, 12, studies * 2)
    if invert:
        means = 255 - means
    inputs = Inputs.measure(means, rng.normal(50, 5, len(means)), ["percentile"] * len(means))
    return Snapshot.from_studies(prob, body, flagged(prob, 0.5), 0.5, inputs)


def test_psi_is_zero_for_equal_samples_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-12)
    small, large = psi(x, x + 0.1), psi(x, x + 1.0)
    assert 0 < small < 0.1 < 0.2 < large


def test_psi_equals_the_textbook_sum_over_bins() -> None:
    rng = np.random.default_rng(1)
    e, a = rng.normal(size=3000), rng.normal(0.3, 1.2, size=2000)
    edges = np.quantile(e, np.linspace(0, 1, 11)[1:-1])
    ep = np.bincount(np.searchsorted(edges, e, side="right"), minlength=10) / len(e)
    ap = np.bincount(np.searchsorted(edges, a, side="right"), minlength=10) / len(a)
    assert psi(e, a) == pytest.approx(float(np.sum((ap - ep) * np.log(ap / ep))), rel=1e-9)


def test_mix_test_is_scipy_chi_square_and_cramers_v() -> None:
    ref = {"XR_WRIST": 50, "XR_HAND": 30, "XR_FINGER": 20}
    now = {"XR_WRIST": 10, "XR_HAND": 10, "XR_FINGER": 80}
    found = mix_test(ref, now)
    table = np.array([[20, 30, 50], [80, 10, 10]])
    expected = stats.chi2_contingency(table, correction=False)
    assert found is not None
    assert found.chi2 == pytest.approx(expected.statistic)
    assert found.p == pytest.approx(expected.pvalue)
    n = table.sum()
    assert found.cramers_v == pytest.approx(np.sqrt(expected.statistic / n))
    assert found.psi == pytest.approx(category_psi(ref, now))
    assert mix_test(ref, {}) is None
    assert mix_test({"XR_WRIST": 3}, {"XR_WRIST": 5}) is None


@pytest.mark.parametrize(("reference_studies", "night_studies"), [(600, 150), (50, 40)])
def test_same_distribution_raises_almost_no_alert_over_many_nights(
    reference_studies: int, night_studies: int
) -> None:
    """Small samples too: two samples of 50 and 40 have a PSI around 0.4 by chance alone,
    which is why an alert also needs its test to be significant."""
    rng = np.random.default_rng(7)
    reference = night(rng, reference_studies)
    nights = [night(rng, night_studies) for _ in range(200)]
    alarms = [alerts(drift(reference, n), n, Bands()) for n in nights]
    assert sum(bool(a) for a in alarms) <= 4  # <= 2 %


def test_inverted_images_and_a_finger_night_alert_with_their_reason() -> None:
    rng = np.random.default_rng(3)
    reference = night(rng, 600)
    inverted = night(rng, 150, invert=True)
    (reason,) = alerts(drift(reference, inverted), inverted, Bands())
    assert reason.startswith("input intensities drifted")
    fingers = night(rng, 150, parts=["XR_FINGER"] * 150)
    (reason,) = alerts(drift(reference, fingers), fingers, Bands())
    assert reason.startswith("body-part mix changed") and "XR_FINGER 100%" in reason


def test_a_small_night_is_measured_but_not_judged() -> None:
    rng = np.random.default_rng(4)
    reference = night(rng, 600)
    tiny = night(rng, 10, invert=True)
    found = drift(reference, tiny)
    assert found.intensity_ks is not None and found.intensity_ks > 0.9
    assert alerts(found, tiny, Bands()) == []


def test_reference_round_trips_and_a_model_without_one_says_none(tmp_path) -> None:
    assert load_reference(tmp_path) is None
    reference = night(np.random.default_rng(5), 300)
    save_reference(tmp_path, reference)
    assert load_reference(tmp_path) == reference


def test_bands_parse_flags_and_refuse_nonsense_in_one_line() -> None:
    assert Bands.parse(["psi=0.3", "min_studies=50"]) == Bands(psi=0.3, min_studies=50)
    with pytest.raises(ConfigError, match="band psi must be positive"):
        Bands.parse(["psi=0"])
    with pytest.raises(ConfigError, match="NAME one of psi, ks"):
        Bands.parse(["psy=0.3"])
    with pytest.raises(ConfigError, match="'high' is not a number"):
        Bands.parse(["ks=high"])


def test_flag_rates_equal_at_zero_or_one_are_no_difference() -> None:
    rng = np.random.default_rng(9)
    reference = dataclasses.replace(night(rng, 100), flag_rate=0.0)
    tonight = dataclasses.replace(night(rng, 60), flag_rate=0.0)
    found = drift(reference, tonight)
    assert found.flag_rate_delta == 0.0 and found.flag_rate_p == 1.0
