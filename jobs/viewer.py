"""`mura viewer PACS [STUDY_UID]`: a PACS's studies, with our results, in OHIF Viewer v3.

What a radiologist would see of a screening: the images, our SR (the finding, probability,
threshold and model, drawn over the first image) and the Secondary Captures. The recipe:

1. the credentials are read (`--pacs-auth FILE` / `--pacs-token FILE`, else
   MURA_PACS_USERNAME / MURA_PACS_PASSWORD or MURA_PACS_TOKEN) and the PACS is checked with
   a QIDO-RS query: one `mura: error:` line, exit 1, when it does not answer or refuses us;
2. OHIF is fetched once (`npm pack @ohif/app`, ~50 MB, into ~/.cache/mura/ohif; `jobs.ohif`);
3. it is served on 127.0.0.1:PORT in front of the PACS (the proxy adds the credentials: the
   browser never sees them), the study list's URL and, given STUDY_UID, the study's are
   printed, and it stays in the foreground until Ctrl-C or SIGTERM.

Loopback only: whoever reaches the port reads the PACS. From another machine, tunnel it
(`ssh -L PORT:127.0.0.1:PORT host`). No Ray, no MLflow.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from jobs.common import run_command
from jobs.ohif import (
    OHIF_VERSION,
    Upstream,
    Viewer,
    cache_root,
    cached_dist,
    ohif_dist,
    start_viewer,
)
from mura_core.pacs.address import load_auth
from mura_core.pacs.client import connect

DESCRIPTION = (
    "Serve OHIF Viewer v3 on 127.0.0.1 in front of a DICOMweb PACS, to see its studies with "
    "what `mura screen --write-back` stored in them: the images, our SR (finding, "
    "probability, threshold and model, drawn over the first image when the SR series is "
    "opened) and the Secondary Captures. OHIF is fetched once with npm "
    f"(@ohif/app {OHIF_VERSION}, ~50 MB) into ~/.cache/mura/ohif (MURA_OHIF_CACHE). The "
    "viewer reads the PACS through a proxy that adds the credentials, so it listens on "
    "127.0.0.1 only. Prints the URLs, then stays in the foreground; Ctrl-C stops it."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pacs", metavar="PACS", help="dicomweb+http[s]://HOST:PORT/PATH")
    p.add_argument(
        "study", metavar="STUDY_UID", nargs="?", default=None, help="a study to open at once"
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    p.add_argument(
        "--pacs-auth", type=Path, default=None, metavar="FILE", help="one line user:password"
    )
    p.add_argument("--pacs-token", type=Path, default=None, metavar="FILE", help="a bearer token")


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def open_viewer(args: argparse.Namespace) -> Viewer:
    """Credentials, the PACS checked, OHIF fetched (once): the viewer, serving."""
    auth = load_auth(args.pacs_auth, args.pacs_token)
    Upstream.of(args.pacs, auth)  # a DICOMweb address, or one line now
    connect(args.pacs, auth).check()
    if cached_dist() is None:
        print(
            f"fetching OHIF {OHIF_VERSION} (npm pack @ohif/app, ~50 MB) into {cache_root()}…",
            file=sys.stderr,
            flush=True,
        )
    return start_viewer(args.pacs, auth, dist=ohif_dist(), port=args.port)


def command(args: argparse.Namespace) -> int:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    viewer = None
    try:
        viewer = open_viewer(args)
        print(f"OHIF Viewer v3 at {viewer.url}/ (the study list of {args.pacs})", flush=True)
        if args.study:
            print(f"the study: {viewer.study_url(args.study)}", flush=True)
        print("Ctrl-C stops it.", file=sys.stderr, flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        if viewer is None:
            raise
    finally:
        if viewer is not None:
            viewer.stop()
        signal.signal(signal.SIGTERM, previous)
    print("viewer stopped", file=sys.stderr, flush=True)
    return 0


def register(sub: argparse._SubParsersAction, summary: str) -> None:
    p = sub.add_parser("viewer", help=summary, description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.viewer", description=DESCRIPTION)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
