"""The frame every rule adapter shares: log routing, threads, device, cost, provenance.

An adapter builds its typed config from ``snakemake.params`` only (values read from
``snakemake.config`` would be invisible to Snakemake's rerun triggers), calls one package
function inside ``run_stage`` and gets back the manifest it writes. The frame chooses the device
and precision once (``compute``: the rule's ``gpu`` resource and its ``compute`` param), hands
them to the work with the log (``Frame``) and sets the job's autocast policy around it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .artifacts import CHECKSUM, content_checksum
from .compute import Compute, autocast_dtype, choose_device, precision_policy
from .logs import start_log
from .provenance import measure, provenance, write_json


@dataclass(frozen=True)
class Frame:
    """What a stage's work is handed: the job's logger, the device to compute on and the
    precision of its autocast regions (``compute``)."""

    log: logging.Logger
    device: str = "cpu"
    precision: str = "float32"

    @property
    def autocast(self) -> str | None:
        """The dtype the job's safe regions autocast to (None on the CPU: bitwise float32)."""
        return autocast_dtype(self.device, self.precision)


def run_stage(
    manifest_path: str,
    log_path: str | None,
    params: dict[str, Any],
    seeds: dict[str, int],
    work: Callable[[Frame], dict[str, Any]],
    threads: int | None = None,
    gpus: int | None = 0,
) -> dict[str, Any]:
    """Run ``work`` with logging to ``log_path``; write its result plus provenance and cost.

    ``threads`` (the rule's ``threads:``) caps torch's intra-op threads, so parallel jobs do not
    oversubscribe the cores Snakemake gave them; ``gpus`` (the rule's ``gpu`` resource) and
    ``params["compute"]`` (the config's ``compute`` block) pick the device and precision.
    """
    frame = start_stage(log_path, params, threads, gpus)
    return record_stage(manifest_path, params, seeds, work, frame)


def start_stage(
    log_path: str | None,
    params: dict[str, Any],
    threads: int | None = None,
    gpus: int | None = 0,
) -> Frame:
    """Route logging to ``log_path``, cap torch's threads, choose the device and precision
    and log ``params``; for a job that writes several results (one ``record_stage`` each)."""
    log = start_log(log_path)
    compute = Compute.from_params(params)
    if threads:
        import torch

        torch.set_num_threads(threads)
    frame = Frame(log, choose_device(gpus, compute.device), compute.precision)
    log.info("params: %s", params)
    log.info("device: %s, autocast: %s", frame.device, frame.autocast or "off (float32)")
    if gpus and frame.device == "cpu":
        log.warning("compute.device is cpu: the %s GPU(s) this job was given stay idle", gpus)
    return frame


@contextmanager
def logged_failures(log: logging.Logger) -> Iterator[None]:
    """Log an exception to the job's log before it propagates: the rule's log then says why the
    job failed (e.g. which input file was damaged), not only Snakemake's console."""
    try:
        yield
    except Exception as err:
        log.error("failed: %s: %s", type(err).__name__, err)
        raise


def record_stage(
    manifest_path: str,
    params: dict[str, Any],
    seeds: dict[str, int],
    work: Callable[[Frame], dict[str, Any]],
    frame: Frame,
) -> dict[str, Any]:
    """Run ``work`` and write its result with provenance and cost to ``manifest_path``.

    A job that writes several results calls this once per result: evaluate once per model of
    its group, unlearning jobs once more per model they score, with the scoring's own params, so
    each result reads as if a separate job had written it (workflow/rules/evaluate.smk says why
    jobs score several models).
    """
    log = frame.log
    with measure() as cost, logged_failures(log), precision_policy(frame.autocast):
        result = work(frame)
    log.info("done in %.1f s, peak memory %.0f MB", cost["wall_time_s"], cost["peak_memory_mb"])
    manifest = {
        **result,
        "provenance": provenance(params, seeds, device=frame.device),
        "cost": cost,
    }
    # A checksum of the content: the verify target tells a result edited by hand.
    manifest[CHECKSUM] = content_checksum(manifest)
    write_json(manifest_path, manifest)
    return manifest
