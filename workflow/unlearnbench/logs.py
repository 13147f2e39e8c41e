"""Logging and progress bars for rule adapters.

A Snakemake job's log file is where a user looks when something failed, so adapters send the
package's log records and progress bars there. Bars update at most every ``PROGRESS_SECONDS``
in a log file (a line each time), and live when attached to a terminal.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
PROGRESS_SECONDS = 10.0
_stream: IO[str] = sys.stderr


def start_log(path: str | None = None) -> logging.Logger:
    """Route ``unlearnbench`` log records (and progress bars) to ``path``, or stderr if None."""
    global _stream
    _stream = open(path, "a", buffering=1) if path else sys.stderr  # noqa: SIM115 (process-long)
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("unlearnbench")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return root


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on the current log stream."""
    interactive = _stream.isatty()
    yield from tqdm(
        iterable,
        desc=desc,
        total=total,
        file=_stream,
        mininterval=0.1 if interactive else PROGRESS_SECONDS,
        ascii=not interactive,
        dynamic_ncols=interactive,
    )
