"""A rule's adapter run once per GPU under torchrun, when the rule's resources ask for several.

The Fisher's rules (``estimate_fisher`` and the unlearning jobs that read its artifact) start
with

    if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
        sys.exit(0)

With ``resources: gpu`` of 0 or 1 that returns False and the adapter goes on as a single
process. With W > 1 it writes the job (the Snakemake object's inputs, outputs, log, params,
wildcards, threads and resources) to a JSON file and runs ``launch_command``: W copies
of this module (``main``), each of which joins the process group, narrows CUDA to its own GPU
and runs the same adapter script on the same job. Every rank therefore runs the whole stage
(the model replicated, the Fisher's columns sharded: ``storage.fit_fisher`` and
``storage.load_fisher`` see the process group); rank 0 writes the rule's outputs and log,
the other ranks write theirs into a scratch folder that is deleted afterwards (kept, and named
in the error, when the job fails). The job's CPU threads are shared among the ranks.

``launch_command`` is ``python -m torch.distributed.run`` with the adapter's own interpreter (the
rule's environment), standalone rendezvous on this node, so nothing needs a port or a host
name; Slurm gives the job its GPUs from the rule's ``gpu`` resource.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist

RANK_ENV = "UNLEARNBENCH_RANK"  # set in a rank: the adapter does the work instead of launching
FILE_LISTS = ("input", "output", "log")
MAPPINGS = ("params", "wildcards", "resources")


class JobFiles(list):
    """A rule's file list as an adapter reads it: positions, and names as attributes
    (a name may stand for a list of files, as Snakemake's ``Namedlist`` allows)."""

    def __init__(self, items: list, named: Mapping[str, Any]) -> None:
        super().__init__(items)
        self._named = dict(named)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_named"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        return self._named[key] if isinstance(key, str) else super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._named.get(key, default)

    def items(self):
        return self._named.items()

    def keys(self):
        return self._named.keys()


def _plain(value: Any) -> Any:
    """A Snakemake value as JSON: file names as str, named lists as lists."""
    if isinstance(value, str):
        return str(value)  # IOFile is a str subclass
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)  # IOFile, paths


def describe_job(snakemake: Any) -> dict[str, Any]:
    """What the ranks need of a Snakemake job, as JSON-able values."""
    job: dict[str, Any] = {
        "rule": snakemake.rule,
        "scriptdir": str(snakemake.scriptdir),
        "threads": int(snakemake.threads),
    }
    for name in FILE_LISTS:
        files = getattr(snakemake, name)
        job[name] = {
            "items": [str(f) for f in files],
            "named": {k: _plain(v) for k, v in files.items()},
        }
    for name in MAPPINGS:
        job[name] = {k: _plain(v) for k, v in getattr(snakemake, name).items()}
    return job


def job_namespace(job: Mapping[str, Any]) -> SimpleNamespace:
    """The Snakemake object an adapter reads, rebuilt from ``describe_job``'s values."""
    lists = {name: JobFiles(job[name]["items"], job[name]["named"]) for name in FILE_LISTS}
    maps = {name: JobFiles(list(job[name].values()), job[name]) for name in MAPPINGS}
    return SimpleNamespace(
        rule=job["rule"], scriptdir=job["scriptdir"], threads=job["threads"], **lists, **maps
    )


def ran_on_every_gpu(snakemake: Any, processes: int | None = None) -> bool:
    """Run this job's adapter once per GPU under torchrun and return True, when the rule asks
    for more than one GPU (``processes`` overrides the count: the tests run 2 CPU processes);
    False in a rank, or for one GPU or none: the caller then does the work itself."""
    if RANK_ENV in os.environ:
        return False
    if processes is None:
        processes = int(snakemake.resources.get("gpu", 0) or 0)
    if processes <= 1:
        return False
    run_ranks(describe_job(snakemake), processes)
    return True


def run_ranks(job: dict[str, Any], processes: int) -> None:
    """``job``'s adapter on ``processes`` ranks (torchrun); raises if any rank fails."""
    anchor = Path(job["output"]["items"][0]).parent
    anchor.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".ranks-{uuid.uuid4().hex[:8]}-", dir=anchor))
    spec = scratch / "job.json"
    spec.write_text(json.dumps({**job, "scratch": str(scratch), "processes": processes}))
    package_root = str(Path(job["scriptdir"]).resolve().parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(max(1, job["threads"] // processes)))
    argv = launch_command(processes, "unlearnbench.fisher.launch", [str(spec)])
    done = subprocess.run(argv, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"resources.gpu: the {processes} processes of rule {job['rule']} (torchrun) failed "
            f"with exit status {done.returncode}; rank 0 logged to {job['log']['items'][:1]}, "
            f"the other ranks under {scratch}"
        )
    shutil.rmtree(scratch, ignore_errors=True)


def launch_command(gpus: int, module: str, args: Sequence[str] = ()) -> list[str]:
    """The argv that runs ``python -m module *args`` once per GPU of this node under torchrun
    (standalone rendezvous), or once without torchrun for ``gpus`` <= 1; the interpreter is
    this one, so the rule's environment carries over."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ValueError(f"gpus must be a non-negative integer, got {gpus!r}")
    if gpus <= 1:
        return [sys.executable, "-m", module, *args]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
    return [*run, f"--nproc-per-node={gpus}", "-m", module, *args]


def init_distributed(cuda: bool | None = None) -> torch.device:
    """In a process started by ``launch_command``: join the process group (NCCL on GPUs, gloo
    on CPUs; ``cuda`` None: GPUs when there are any) and return this rank's device (its own
    GPU: LOCAL_RANK, or the only one it sees when the launcher narrowed CUDA_VISIBLE_DEVICES)."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local if torch.cuda.device_count() > 1 else 0)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return device


def _rank_paths(job: dict[str, Any], rank: int) -> dict[str, Any]:
    """The job as rank ``rank`` runs it: ranks above 0 write their outputs and log into the
    scratch folder (same relative paths), so only rank 0's reach the rule's outputs."""
    if rank == 0:
        return job
    root = Path(job["scratch"]) / f"rank{rank}"

    def move(path: Any) -> Any:
        if isinstance(path, list):
            return [move(p) for p in path]
        target = root / Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(path)).anchor)
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(target)

    out = dict(job)
    for name in ("output", "log"):
        files = job[name]
        out[name] = {
            "items": [move(p) for p in files["items"]],
            "named": {k: move(v) for k, v in files["named"].items()},
        }
    return out


def _narrow_cuda(job: dict[str, Any], local_rank: int) -> None:
    """Before CUDA starts: this rank sees only its own GPU (as cuda:0), so that code which
    picks "cuda" puts its tensors there."""
    if not int(job["resources"].get("gpu", 0) or 0):
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(job["processes"])]
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[local_rank]


def main(argv: list[str] | None = None) -> int:
    """One rank: ``python -m unlearnbench.fisher.launch job.json`` under torchrun."""
    import runpy

    (spec,) = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(spec).read_text())
    _narrow_cuda(job, int(os.environ.get("LOCAL_RANK", "0")))
    init_distributed(cuda=bool(int(job["resources"].get("gpu", 0) or 0)))
    rank = dist.get_rank()
    os.environ[RANK_ENV] = str(rank)
    job = _rank_paths(job, rank)
    job["threads"] = max(1, job["threads"] // job["processes"])
    script = Path(job["scriptdir"]) / f"{job['rule']}.py"
    try:
        runpy.run_path(
            str(script), init_globals={"snakemake": job_namespace(job)}, run_name="__main__"
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
