"""`mura results` / `python -m jobs.results`: a study's mura-screen results in a PACS, newest
first (`mura_core.results.history`): one C-FIND or QIDO-RS for our objects in the study,
then each of our SRs fetched and read."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jobs.common import (
    add_pacs_access_arguments,
    pacs_access,
    register_command,
    tool_main,
    wrapped_help,
)
from mura_core.archive.source import PACS_FORMS
from mura_core.errors import ConfigError
from mura_core.locations import addressable
from mura_core.pacs.address import PacsAddress
from mura_core.results.history import format_history, study_history

DESCRIPTION = (
    "List the results mura-screen stored in study STUDY_UID of the PACS at --pacs ADDR, "
    "newest first: per version of the study's SR when it was made, the model (name and "
    "registered version), the finding (flagged or normal), the study's probability and the "
    "threshold, the SR it supersedes (a study screened again after its images changed, or by "
    "another model, gets a new SR naming the one before), and the Secondary Captures, "
    "heatmaps and key-object documents of that version. Credentials as for a PACS source: "
    "--pacs-auth / --pacs-token, or MURA_PACS_USERNAME and MURA_PACS_PASSWORD (or "
    "MURA_PACS_TOKEN); DIMSE: our --ae-title."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_uid", metavar="STUDY_UID", help="the study's StudyInstanceUID")
    p.add_argument("--pacs", required=True, metavar="ADDR", help=f"the PACS: {PACS_FORMS}")
    add_pacs_access_arguments(p)


def command(args: argparse.Namespace) -> int:
    if not addressable(args.study_uid):
        raise ConfigError(f"STUDY_UID {args.study_uid!r}: not a UID a PACS request can name")
    pacs = pacs_access(args).connect(PacsAddress.parse(args.pacs))
    pacs.check()
    print(format_history(study_history(pacs, args.study_uid)))
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    register_command(sub, "results", summary, wrapped_help(DESCRIPTION), add_arguments, command)


def main(argv: Sequence[str] | None = None) -> int:
    return tool_main("results", wrapped_help(DESCRIPTION), add_arguments, command, argv)


if __name__ == "__main__":
    sys.exit(main())
