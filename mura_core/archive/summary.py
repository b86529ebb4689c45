"""What a listing holds, per body part: the table `mura inspect`, `mura synth` and the demo
print."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mura_core.body_parts import part_order
from mura_core.listing import Listing

PACS_KINDS: tuple[str, ...] = ("dicomweb", "dimse")  # a listing's kind when read from a PACS


@dataclass(frozen=True)
class PartSummary:
    """Counts for one body part: studies, positive studies, unlabelled studies, images."""

    studies: int
    positive: int
    unlabelled: int
    images: int


def summarize(listing: Listing) -> dict[str, PartSummary]:
    """Per body part counts (study-level labels): MURA's seven parts first, then the other
    named parts (`leg`, `hip` …) alphabetically, then OTHER."""
    studies = listing.studies()
    by_part: dict[str, Counter[str]] = {}
    for refs in studies.values():
        counter = by_part.setdefault(str(refs[0].body_part), Counter())
        counter["studies"] += 1
        counter["images"] += len(refs)
        label = refs[0].label
        counter["positive"] += int(label == 1)
        counter["unlabelled"] += int(label is None)
    order = part_order(by_part)
    return {
        part: PartSummary(
            by_part[part]["studies"],
            by_part[part]["positive"],
            by_part[part]["unlabelled"],
            by_part[part]["images"],
        )
        for part in order
        if part in by_part
    }


def format_summary(listing: Listing) -> str:
    """The one-screen table `mura inspect` and the demo print."""
    table = summarize(listing)
    lines = [
        f"{listing.kind} archive at {listing.root}",
        f"{'body part':<12} {'studies':>8} {'positive':>9} {'unlabelled':>11} {'images':>7}",
    ]
    totals = Counter()
    for part, row in table.items():
        lines.append(
            f"{part:<12} {row.studies:>8} {row.positive:>9} {row.unlabelled:>11} {row.images:>7}"
        )
        totals.update(
            studies=row.studies, positive=row.positive, unlabelled=row.unlabelled, images=row.images
        )
    lines.append(
        f"{'total':<12} {totals['studies']:>8} {totals['positive']:>9} "
        f"{totals['unlabelled']:>11} {totals['images']:>7}"
    )
    splits = Counter(str(r.split) if r.split else "unassigned" for r in listing.refs)
    lines.append("images by split: " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    skipped = "instances skipped" if listing.kind in PACS_KINDS else "junk files skipped"
    lines.append(f"problems: {len(listing.problems)}   {skipped}: {listing.junk_skipped}")
    for problem in listing.problems[:10]:
        lines.append(f"  {problem.error_type}: {problem.path}: {problem.reason}")
    if len(listing.problems) > 10:
        lines.append(f"  … and {len(listing.problems) - 10} more")
    lines.extend(f"note: {note}" for note in listing.notes)
    return "\n".join(lines)
