"""4. Screening runs (`mura screen`, `mura nightly`): params, counts, monitoring figures,
the record `mura monitor` reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from mura_core.run_contract.tags import Job, Tag, bool_tag, read_bool

if TYPE_CHECKING:  # annotations only: monitor and the Ray Train controller import this
    from mura_core.notify.summary import NotifySummary
    from mura_core.screen_summary import MonitoringSummary, ScreenSummary, WriteBackSummary


@dataclass(frozen=True)
class ScreenRunParams:
    """What a screening run logs as params: the source, the model, the set-up."""

    source_kind: str
    source_digest: str
    model_uri: str
    model_name: str
    model_version: str | None  # None: unregistered
    model_arch: str
    model_size: int
    threshold: float
    batch_size: int
    gpus: int

    def to_params(self) -> dict[str, Any]:
        """By name; MLflow logs each value as its `str()`."""
        return {
            "source.kind": self.source_kind,
            "source.digest": self.source_digest,
            "model.uri": self.model_uri,
            "model.name": self.model_name,
            "model.version": self.model_version or "unregistered",
            "model.arch": self.model_arch,
            "model.size": self.model_size,
            "threshold": self.threshold,
            "batch_size": self.batch_size,
            "gpus": self.gpus,
        }


@dataclass(frozen=True)
class WriteBackCounts:
    """Results stored into a PACS by a screening run, counted by kind (`write_back.<field>`),
    never which: studies written back, failed, objects left in the outbox; SRs, Secondary
    Captures, heatmaps and key-object documents stored; SRs that supersede an earlier one.
    The fields with a default came later: a run logged before them reads back with 0."""

    studies: int
    captures: int
    failed: int
    outbox_pending: int
    reports: int = 0
    heatmaps: int = 0
    key_objects: int = 0
    versions: int = 0

    @classmethod
    def of(cls, summary: WriteBackSummary) -> WriteBackCounts:
        return cls(
            studies=summary.studies,
            captures=summary.captures,
            failed=len(summary.failed),
            outbox_pending=summary.outbox_pending,
            reports=summary.reports,
            heatmaps=summary.heatmaps,
            key_objects=summary.key_objects,
            versions=summary.versions,
        )

    def to_metrics(self) -> dict[str, float]:
        return {f"write_back.{f.name}": getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class NotifyCounts:
    """Notices a screening run told the worklist (`--notify`): counts only, never who."""

    sent: int
    queued: int
    resent: int
    pending: int

    @classmethod
    def of(cls, summary: NotifySummary) -> NotifyCounts:
        return cls(summary.sent, summary.queued, summary.resent, summary.pending)

    def to_metrics(self) -> dict[str, float]:
        return {f"notify.{f.name}": getattr(self, f.name) for f in fields(self)}


def _counts(metrics: Mapping[str, float], kind: type, prefix: str) -> Any:
    """A `WriteBackCounts` / `NotifyCounts` back from its `prefix.*` metrics (None: absent;
    a field with a default that an older run did not log keeps it)."""
    names = {f.name for f in fields(kind)}
    found = {
        name: int(v)
        for k, v in metrics.items()
        if k.startswith(prefix) and (name := k.removeprefix(prefix)) in names
    }
    required = {f.name for f in fields(kind) if f.default is MISSING}
    return kind(**found) if required <= found.keys() else None


COUNT_METRICS = ("studies", "images", "flagged", "quarantined")
RATE_METRICS = ("images_per_s", "seconds", "resumed_images")


@dataclass(frozen=True)
class ScreenRunRecord:
    """A screening run: who ran it, with which model, its counts and monitoring figures."""

    job: str
    studies: int = 0
    images: int = 0
    flagged: int = 0
    quarantined: int = 0
    images_per_s: float = 0.0
    seconds: float = 0.0
    resumed_images: int = 0
    figures: Mapping[str, float] = field(default_factory=dict)  # monitoring's, flat names
    reference: bool | None = None  # None: the run was not monitored
    alert: str | None = None
    write_back: WriteBackCounts | None = None
    notify: NotifyCounts | None = None
    model_versions: str = "unregistered"  # `name/version` of each registered member
    model_uri: str = ""
    model_run_ids: str = ""  # each member's training run ("-": none), ","-joined
    git_commit: str = ""

    @classmethod
    def of(cls, summary: ScreenSummary, **identity: str) -> ScreenRunRecord:
        """From the run's summary; `identity`: the model's tags and the commit."""
        monitoring: MonitoringSummary | None = summary.monitoring
        counts = summary.counts
        return cls(
            job=summary.job,
            studies=counts.studies,
            images=counts.images,
            flagged=counts.flagged,
            quarantined=counts.quarantined,
            images_per_s=summary.images_per_s or 0.0,
            seconds=summary.seconds or 0.0,
            resumed_images=summary.resumed,
            figures=dict(monitoring.figures) if monitoring else {},
            reference=monitoring.reference if monitoring else None,
            alert=monitoring.alert if monitoring else None,
            write_back=WriteBackCounts.of(summary.write_back) if summary.write_back else None,
            notify=NotifyCounts.of(summary.notify) if summary.notify else None,
            **identity,
        )

    def to_tags(self) -> dict[str, str]:
        tags = {
            Tag.JOB: self.job,
            Tag.MODEL_VERSION: self.model_versions,
            Tag.MODEL_URI: self.model_uri,
            Tag.MODEL_RUN_ID: self.model_run_ids,
            Tag.GIT_COMMIT: self.git_commit,
        }
        if self.reference is not None:
            tags[Tag.REFERENCE] = bool_tag(self.reference)
        if self.alert:
            tags[Tag.ALERT] = self.alert
        return tags

    def to_metrics(self) -> dict[str, float]:
        metrics = {name: getattr(self, name) for name in COUNT_METRICS + RATE_METRICS}
        metrics.update(self.figures)
        if self.write_back is not None:
            metrics.update(self.write_back.to_metrics())
        if self.notify is not None:
            metrics.update(self.notify.to_metrics())
        return metrics

    @classmethod
    def from_run(
        cls, metrics: Mapping[str, float], tags: Mapping[str, str], params: Mapping[str, str]
    ) -> ScreenRunRecord:
        """A logged run back; what it lacks keeps its default (no job tag: `screen`)."""
        own = set(COUNT_METRICS + RATE_METRICS)
        counts = {name: metrics[name] for name in own if name in metrics}
        for name in COUNT_METRICS + ("resumed_images",):
            if name in counts:
                counts[name] = int(counts[name])
        counted = ("write_back.", "notify.")
        return cls(
            job=tags.get(Tag.JOB, Job.SCREEN),
            figures={
                k: v for k, v in metrics.items() if k not in own and not k.startswith(counted)
            },
            reference=read_bool(tags.get(Tag.REFERENCE)),
            alert=tags.get(Tag.ALERT),
            write_back=_counts(metrics, WriteBackCounts, "write_back."),
            notify=_counts(metrics, NotifyCounts, "notify."),
            model_versions=tags.get(Tag.MODEL_VERSION, "unregistered"),
            model_uri=tags.get(Tag.MODEL_URI, ""),
            model_run_ids=tags.get(Tag.MODEL_RUN_ID, ""),
            git_commit=tags.get(Tag.GIT_COMMIT, ""),
            **counts,
        )

    @property
    def flag_rate(self) -> float | None:
        return self.figures.get(FLAG_RATE)

    def part_flag_rates(self) -> dict[str, float]:
        return part_flag_rates(self.figures)


FLAG_RATE = "flag_rate"  # the monitoring figure: flagged studies / studies


def part_flag_rates(figures: Mapping[str, float]) -> dict[str, float]:
    """The flag rate of each body part screened (`flag_rate.<BODY_PART>`)."""
    prefix = FLAG_RATE + "."
    return {k.removeprefix(prefix): v for k, v in figures.items() if k.startswith(prefix)}
