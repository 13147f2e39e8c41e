"""The frame every rule adapter shares: log routing, threads, cost measurement, provenance.

An adapter builds its typed config from ``snakemake.params`` only (values read from
``snakemake.config`` would be invisible to Snakemake's rerun triggers), calls one package
function inside ``run_stage`` and gets back the manifest it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .logs import start_log
from .provenance import measure, provenance, write_json


def run_stage(
    manifest_path: str,
    log_path: str | None,
    params: dict[str, Any],
    seeds: dict[str, int],
    work: Callable[[logging.Logger], dict[str, Any]],
    threads: int | None = None,
) -> dict[str, Any]:
    """Run ``work`` with logging to ``log_path``; write its result plus provenance and cost.

    ``threads`` (the rule's ``threads:``) caps torch's intra-op threads, so parallel jobs do not
    oversubscribe the cores Snakemake gave them.
    """
    log = start_stage(log_path, params, threads)
    return record_stage(manifest_path, params, seeds, work, log)


def start_stage(
    log_path: str | None, params: dict[str, Any], threads: int | None = None
) -> logging.Logger:
    """Route logging to ``log_path``, cap torch's threads and log ``params``; for a job that
    writes several results (one ``record_stage`` each) instead of one ``run_stage``."""
    log = start_log(log_path)
    if threads:
        import torch

        torch.set_num_threads(threads)
    log.info("params: %s", params)
    return log


def record_stage(
    manifest_path: str,
    params: dict[str, Any],
    seeds: dict[str, int],
    work: Callable[[logging.Logger], dict[str, Any]],
    log: logging.Logger,
) -> dict[str, Any]:
    """Run ``work`` and write its result with provenance and cost to ``manifest_path``.

    A job that writes several results calls this once per result: evaluate once per model of
    its group, unlearning jobs once more per model they score, with the scoring's own params, so
    each result reads as if a separate job had written it (workflow/rules/evaluate.smk says why
    jobs score several models).
    """
    with measure() as cost:
        try:
            result = work(log)
        except Exception as err:
            # The rule's log then says why the job failed, not only Snakemake's console.
            log.error("failed: %s: %s", type(err).__name__, err)
            raise
    log.info("done in %.1f s, peak memory %.0f MB", cost["wall_time_s"], cost["peak_memory_mb"])
    manifest = {**result, "provenance": provenance(params, seeds), "cost": cost}
    write_json(manifest_path, manifest)
    return manifest
