"""Logging and progress bars: every record and every bar goes to the job's log.

A Snakemake job's log file is where a user looks when something failed or seems stuck, so the
package's log records and all its progress bars go to one stream: the file ``start_log`` opened
(the rule's log), or stderr outside a job. In a log file a bar writes a line at most every
``PROGRESS_SECONDS``; on a terminal it is live. ``progress`` wraps an iterable, ``progress_bar``
is the same bar for loops that advance by hand (``bar.update(n)``).
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


def progress_bar(
    desc: str, total: int | None = None, enabled: bool | None = True, unit: str = "it"
) -> tqdm:
    """A tqdm bar on the log stream. ``enabled``: True always, False never, None only when the
    stream is a terminal (library calls that should stay quiet in logs)."""
    interactive = _stream.isatty()
    return tqdm(
        desc=desc,
        total=total,
        unit=unit,
        file=_stream,
        disable=not interactive if enabled is None else not enabled,
        mininterval=0.1 if interactive else PROGRESS_SECONDS,
        ascii=not interactive,
        dynamic_ncols=interactive,
    )


def progress(
    iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool | None = True
) -> Iterator[T]:
    """``iterable`` with a bar on the log stream (``enabled`` as in ``progress_bar``)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(desc, total, enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)
