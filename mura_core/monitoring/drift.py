"""How far a night is from the reference: PSI and KS of scores and intensities, a chi-square
test of the body-part mix, and the bands that turn figures into alerts (scipy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import stats

from mura_core.errors import ConfigError
from mura_core.monitoring.snapshot import Snapshot

_PSI_BINS = 10
_PSI_FLOOR = 1e-4  # an empty bin's proportion, so that the log stays finite


@dataclass(frozen=True)
class Bands:
    """When a figure is out of band (the defaults are documented in docs/monitoring.md).

    A figure alerts when its effect is out of band *and* its test is significant at
    `alpha`: the effect size keeps a large night from alerting on any difference a large
    sample makes significant, the test keeps a small night from alerting on sampling noise
    (two samples of 50 from one distribution have a PSI around 0.4 over ten bins). PSI above
    0.2 is the usual 'significant shift' rule of credit scoring, where the index comes from.
    - scores, intensities: PSI > psi or KS statistic > ks, and the KS test's p < alpha;
    - body-part mix: Cramér's V > mix_v, and the chi-square test's p < alpha;
    - flag rate: off the reference's by more than flag_rate, and the chi-square test of the
      two proportions gives p < alpha."""

    psi: float = 0.2
    ks: float = 0.25
    mix_v: float = 0.15
    flag_rate: float = 0.15  # absolute difference from the reference's flag rate
    alpha: float = 1e-3
    min_studies: int = 20  # fewer studies: figures are logged, no alert is raised

    def __post_init__(self) -> None:
        for name in ("psi", "ks", "mix_v", "flag_rate", "alpha"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"band {name} must be positive, got {getattr(self, name)}")
        if self.min_studies < 1:
            raise ConfigError(f"band min_studies must be >= 1, got {self.min_studies}")

    @classmethod
    def parse(cls, items: Sequence[str]) -> Bands:
        """`--band NAME=VALUE` flags (e.g. `psi=0.25`) over the defaults."""
        names = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for item in items:
            name, sep, value = item.partition("=")
            if not sep or name.strip() not in names:
                raise ConfigError(
                    f"--band {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}"
                )
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"--band {item!r}: {value!r} is not a number") from None
            values[name.strip()] = int(number) if name.strip() == "min_studies" else number
        return cls(**values)


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = _PSI_BINS) -> float:
    """Population stability index of `actual` against `expected`, over the expected
    sample's quantile bins (ties merged): sum (a - e) ln(a / e) = KL(a|e) + KL(e|a)."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    edges = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    e_p = _proportions(np.searchsorted(edges, e, side="right"), len(edges) + 1)
    a_p = _proportions(np.searchsorted(edges, a, side="right"), len(edges) + 1)
    return float(stats.entropy(a_p, e_p) + stats.entropy(e_p, a_p))


def _proportions(bin_index: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(bin_index, minlength=n_bins).astype(np.float64)
    p = np.maximum(counts / max(counts.sum(), 1.0), _PSI_FLOOR)
    return p / p.sum()


def category_psi(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    """PSI of two category counts (body parts) over the union of their categories."""
    names = sorted(set(expected) | set(actual))
    e = np.maximum(np.array([expected.get(n, 0) for n in names], np.float64), 0)
    a = np.maximum(np.array([actual.get(n, 0) for n in names], np.float64), 0)
    e_p = np.maximum(e / max(e.sum(), 1.0), _PSI_FLOOR)
    a_p = np.maximum(a / max(a.sum(), 1.0), _PSI_FLOOR)
    return float(stats.entropy(a_p, e_p) + stats.entropy(e_p, a_p))


@dataclass(frozen=True)
class MixTest:
    """The body-part mix, reference against tonight: chi-square, its p-value, Cramér's V."""

    chi2: float
    p: float
    cramers_v: float
    psi: float


def mix_test(expected: Mapping[str, int], actual: Mapping[str, int]) -> MixTest | None:
    """Chi-square test of independence on the 2 x parts table; None when one side is empty
    or only one body part occurs in both together (nothing to compare)."""
    names = sorted(n for n in set(expected) | set(actual) if expected.get(n, 0) + actual.get(n, 0))
    if len(names) < 2 or not sum(expected.values()) or not sum(actual.values()):
        return None
    table = np.array([[expected.get(n, 0) for n in names], [actual.get(n, 0) for n in names]])
    result = stats.chi2_contingency(table, correction=False)
    v = float(stats.contingency.association(table, method="cramer", correction=False))
    return MixTest(float(result.statistic), float(result.pvalue), v, category_psi(expected, actual))


@dataclass(frozen=True)
class Drift:
    """Tonight against the reference (None where a side has nothing to compare)."""

    score_psi: float | None = None
    score_ks: float | None = None
    score_ks_p: float | None = None
    intensity_psi: float | None = None
    intensity_ks: float | None = None
    intensity_ks_p: float | None = None
    mix: MixTest | None = None
    flag_rate_delta: float | None = None
    flag_rate_p: float | None = None

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metric names (`drift.*`), only the figures that exist."""
        out = {f"drift.{k}": v for k, v in asdict(self).items() if k != "mix" and v is not None}
        if self.mix is not None:
            out.update(
                {
                    "drift.mix_chi2": self.mix.chi2,
                    "drift.mix_p": self.mix.p,
                    "drift.mix_cramers_v": self.mix.cramers_v,
                    "drift.mix_psi": self.mix.psi,
                }
            )
        return out


def _two_samples(expected: Sequence[float], actual: Sequence[float]) -> tuple[float, ...] | None:
    if len(expected) < 2 or len(actual) < 2:
        return None
    ks = stats.ks_2samp(expected, actual)
    return psi(expected, actual), float(ks.statistic), float(ks.pvalue)


def drift(reference: Snapshot, night: Snapshot) -> Drift:
    """Every comparison the two snapshots allow."""
    scores = _two_samples(reference.scores, night.scores)
    intensity = None
    if reference.inputs is not None and night.inputs is not None:
        intensity = _two_samples(reference.inputs.pixel_mean, night.inputs.pixel_mean)
    return Drift(
        *(scores or (None, None, None)),
        *(intensity or (None, None, None)),
        mix_test(reference.body_parts, night.body_parts),
        *(_flag_rates(reference, night) or (None, None)),
    )


def _flag_rates(reference: Snapshot, night: Snapshot) -> tuple[float, float] | None:
    """Tonight's flag rate minus the reference's, and the chi-square test's p of the 2 x 2
    table (flagged or not, reference or tonight)."""
    if reference.flag_rate is None or night.flag_rate is None:
        return None
    flagged = [
        round(reference.flag_rate * reference.studies),
        round(night.flag_rate * night.studies),
    ]
    table = np.array([flagged, [reference.studies - flagged[0], night.studies - flagged[1]]])
    if (table.sum(axis=1) == 0).any():  # none flagged on both sides, or all: no difference
        return night.flag_rate - reference.flag_rate, 1.0
    p = float(stats.chi2_contingency(table, correction=False).pvalue)
    return night.flag_rate - reference.flag_rate, p


def alerts(found: Drift, night: Snapshot, bands: Bands) -> list[str]:
    """One-line reasons for every out-of-band figure; none for a night too small to judge."""
    if night.studies < bands.min_studies:
        return []
    reasons = []
    if _shifted(found.intensity_psi, found.intensity_ks, found.intensity_ks_p, bands):
        reasons.append(
            f"input intensities drifted (PSI {found.intensity_psi:.2f}, "
            f"KS {found.intensity_ks:.2f}; bands {bands.psi}, {bands.ks})"
        )
    mix = found.mix
    if mix is not None and mix.p < bands.alpha and mix.cramers_v > bands.mix_v:
        top = max(night.body_parts, key=night.body_parts.__getitem__)
        share = night.body_parts[top] / max(night.studies, 1)
        reasons.append(
            f"body-part mix changed (chi-square p {mix.p:.1e}, Cramér's V {mix.cramers_v:.2f}; "
            f"{top} {share:.0%} of studies)"
        )
    if _shifted(found.score_psi, found.score_ks, found.score_ks_p, bands):
        reasons.append(
            f"score distribution drifted (PSI {found.score_psi:.2f}, KS {found.score_ks:.2f}; "
            f"bands {bands.psi}, {bands.ks})"
        )
    delta, p = found.flag_rate_delta, found.flag_rate_p
    if delta is not None and p is not None and abs(delta) > bands.flag_rate and p < bands.alpha:
        reasons.append(
            f"flag rate {night.flag_rate:.0%} is {delta:+.0%} from the reference "
            f"(band ±{bands.flag_rate:.0%}, p {p:.1e})"
        )
    return reasons


def _shifted(psi_: float | None, ks: float | None, ks_p: float | None, bands: Bands) -> bool:
    if psi_ is None or ks is None or ks_p is None:
        return False
    return (psi_ > bands.psi or ks > bands.ks) and ks_p < bands.alpha
