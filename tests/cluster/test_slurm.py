"""The smoke DAG submitted job by job to a real single-node Slurm cluster on localhost.

`.ci/slurm/start.sh` starts munged, slurmctld and slurmd with everything under a temp folder;
Snakemake submits the DAG through snakemake-executor-plugin-slurm with the project's profile
(`workflow/profiles/slurm`) plus the few overrides a test cluster without slurmdbd needs. The
test checks that every job ran as a Slurm job (Snakemake's submissions, squeue's records, the
cluster's job-completion log and each job's Slurm log) and that the results equal those of the
local smoke run, then `.ci/slurm/stop.sh` stops the cluster, on failure too.

Without Slurm (see `.ci/slurm/install.sh`) or root the test is skipped, unless
UNLEARNBENCH_REQUIRE_SLURM is set (as in CI): then that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from snakemake_runner import REPO, SMOKE, SNAKEMAKE, copy_workflow, run_snakemake
from unlearnbench.artifacts import CHECKSUM, content_checksum

pytestmark = pytest.mark.slow

CI_SLURM = REPO / ".ci" / "slurm"
PROFILE = ("--workflow-profile", "workflow/profiles/slurm")
REQUIRE_SLURM = "UNLEARNBENCH_REQUIRE_SLURM"
SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "sinfo")

# What is submitted: every training rule of the smoke DAG (data stage, tokenizer, base model,
# original, retrained and DP-SGD models) and one evaluation, so the metrics JSON is compared
# too. The full `all` target works the same way but adds every evaluation and later stage:
# on 2 cores that is most of the test's budget again (set UNLEARNBENCH_SLURM_TARGETS=all).
TARGETS = tuple(
    os.environ.get(
        "UNLEARNBENCH_SLURM_TARGETS", "models results/eval/news/seed~0/original.json"
    ).split()
)
# Settings for this test cluster only, on top of the profile a user runs with:
LOCAL_CLUSTER = (
    # No slurmdbd, so no sacct: poll squeue (the cluster keeps finished jobs for MinJobAge=900 s).
    "--slurm-status-command",
    "squeue",
    # Jobs take seconds here, not hours: check soon after each submission.
    "--slurm-init-seconds-before-status-checks",
    "4",
    # One local file system: outputs are visible at once.
    "--latency-wait",
    "5",
    # A failure shows at once instead of after two resubmissions.
    "--retries",
    "0",
)
# SIGINT makes the slurm executor scancel its jobs before it exits; -k: SIGKILL 60 s later
# (the cluster's stop.sh cancels whatever is left).
DAG_TIMEOUT_S = 600
SIGINT_AFTER = ("timeout", "-s", "INT", "-k", "60", str(DAG_TIMEOUT_S))
# JSON fields that legitimately differ between two runs: where and when a file was made, and a
# result's self-checksum, which covers those fields too (each is checked for validity instead).
VOLATILE_KEYS = {"provenance", "cost", CHECKSUM}
VOLATILE_KEY = re.compile(
    r"seconds|per_second|gflops|wall_time|duration|timestamp|peak_memory", re.I
)
# Folders of results/ whose content is about the run, not the result.
RUN_RECORDS = {"logs", "benchmarks", "checkpoints"}


class Cluster:
    """A cluster started from .ci/slurm/start.sh under ``root``."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.conf = root / "etc" / "slurm.conf"
        self.env = env
        self.start_seconds: float | None = None

    @property
    def client_env(self) -> dict[str, str]:
        """Environment for sbatch/squeue/snakemake: the config, and the srun wrapper first on
        PATH (the jobstep plugin drops SLURM_CONF before its nested srun)."""
        return {
            **self.env,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self.root / 'bin'}{os.pathsep}{self.env['PATH']}",
        }

    def start(self) -> None:
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", str(CI_SLURM / "start.sh")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.start_seconds = round(time.monotonic() - started, 2)
        if proc.returncode != 0:
            pytest.fail(
                f"could not start Slurm (.ci/slurm/start.sh):\n{proc.stdout}\n{proc.stderr}"
            )

    def stop(self) -> None:
        proc = subprocess.run(
            ["bash", str(CI_SLURM / "stop.sh")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        left = self.processes()
        assert proc.returncode == 0 and not left, (
            f"Slurm cluster not stopped cleanly (left: {left}):\n{proc.stdout}\n{proc.stderr}"
        )

    def processes(self) -> list[int]:
        """Processes started by this cluster: they all carry its SLURM_CONF."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if marker in environ.read_bytes().split(b"\0"):
                    found.append(int(environ.parent.name))
            except OSError:
                continue
        return [pid for pid in found if pid != os.getpid()]

    def squeue(self, run_id: str) -> dict[str, str]:
        """{Slurm job id: state} of one Snakemake run's jobs, finished ones included."""
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%T"],
            env=self.client_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(line.split("|", 1) for line in out.split())

    def completion_records(self) -> dict[str, dict[str, str]]:
        """Slurm's job-completion log (jobcomp/filetxt), by job id."""
        records = {}
        path = self.root / "log" / "jobcomp.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            records[fields["JobId"]] = fields
        return records


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_SLURM, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE_SLURM} is set, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_installed() -> None:
    """Skip (or fail, with UNLEARNBENCH_REQUIRE_SLURM) before the costly session fixtures run:
    a test names it in usefixtures, which pytest sets up first."""
    missing = [name for name in SLURM_BINARIES if shutil.which(name) is None]
    if missing:
        _unavailable(
            f"Slurm is not installed ({', '.join(missing)} not found); "
            "install it with: bash .ci/slurm/install.sh"
        )
    if os.geteuid() != 0:
        _unavailable("the throw-away Slurm cluster runs its daemons as root")


@pytest.fixture
def slurm_cluster(slurm_installed, tmp_path, request) -> Cluster:
    # Not under pytest's tmp dir: munged wants every parent of its socket traversable by all
    # (pytest's are 0700) and the socket path short. The logs are copied to tmp_path at the end.
    root = Path(tempfile.mkdtemp(prefix="ub-slurm-", dir="/tmp"))
    root.chmod(0o755)
    # Free ports, so that a cluster already running on this machine does not clash.
    env = {
        **os.environ,
        "SLURM_ROOT": str(root),
        "SLURMCTLD_PORT": str(_free_port()),
        "SLURMD_PORT": str(_free_port()),
    }
    env.pop("SLURM_CONF", None)
    cluster = Cluster(root, env)

    def stop_and_clean():
        try:
            cluster.stop()
        finally:
            if (root / "log").is_dir():
                shutil.copytree(root / "log", tmp_path / "slurm-logs", dirs_exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(stop_and_clean)  # registered first: a half-started cluster stops too
    cluster.start()
    return cluster


def _jobs(log: str) -> list[dict]:
    """Job blocks Snakemake printed: rule, jobid, whether it ran locally, whether it has outputs."""
    jobs = []
    for match in re.finditer(r"^(localrule|rule) (\w+):\n((?:    .*\n?)*)", log, re.M):
        body = match.group(3)
        jobid = re.search(r"^    jobid: (\d+)", body, re.M)
        wildcards = re.search(r"^    wildcards: (.*)", body, re.M)
        jobs.append(
            {
                "rule": match.group(2),
                "local": match.group(1) == "localrule",
                "jobid": jobid.group(1) if jobid else None,
                "outputs": bool(re.search(r"^    output: ", body, re.M)),
                "wildcards": wildcards.group(1) if wildcards else "",
            }
        )
    return jobs


def _canonical_json(value):
    if isinstance(value, dict):
        return {
            key: _canonical_json(item)
            for key, item in value.items()
            if key not in VOLATILE_KEYS and not VOLATILE_KEY.search(key)
        }
    if isinstance(value, list):
        return [_canonical_json(item) for item in value]
    return value


def _result_files(workdir: Path) -> dict[str, Path]:
    results = workdir / "results"
    return {
        str(path.relative_to(results)): path
        for path in sorted(results.rglob("*"))
        if path.is_file() and path.relative_to(results).parts[0] not in RUN_RECORDS
    }


def _same_content(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        for path in (a, b):
            result = json.loads(path.read_text())
            if isinstance(result, dict) and CHECKSUM in result:
                assert result[CHECKSUM] == content_checksum(result), f"{path}: stale checksum"
        return _canonical_json(json.loads(a.read_text())) == _canonical_json(
            json.loads(b.read_text())
        )
    return a.read_bytes() == b.read_bytes()


def test_slurm_profile_gives_every_job_walltime_and_memory(workflow_copy):
    """The profile parses, and every job it would submit asks Slurm for time and memory."""
    out = run_snakemake(workflow_copy, "-n", "all", *SMOKE, *PROFILE).stdout
    jobs = [job for job in _jobs(out) if job["outputs"]]
    assert jobs
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", out, flags=re.M):
        if "    output: " in block:
            resources = re.search(r"^    resources: (.*)", block, re.M).group(1)
            assert re.search(r"\bmem_mb=\d+", resources) and re.search(
                r"\bruntime=\d+", resources
            ), block
    profile = (REPO / "workflow/profiles/slurm/config.yaml").read_text().splitlines()
    for i, line in enumerate(profile):
        if re.match(r"^[a-z][\w-]*:", line):  # every top-level setting is explained above it
            assert profile[i - 1].startswith("#"), f"profile entry without a comment: {line}"


@pytest.mark.usefixtures("slurm_installed")
def test_smoke_dag_runs_as_slurm_jobs_and_matches_local_run(
    slurm_cluster, smoke_study, tmp_path, capsys
):
    workdir = copy_workflow(tmp_path / "wf")
    env = slurm_cluster.client_env

    planned = run_snakemake(workdir, "-n", *TARGETS, *SMOKE, *PROFILE).stdout
    expected = [job for job in _jobs(planned) if job["outputs"]]
    assert expected, f"nothing to run for {TARGETS}:\n{planned}"

    started = time.monotonic()
    proc = subprocess.run(
        [*SIGINT_AFTER, SNAKEMAKE, *TARGETS, *SMOKE, *PROFILE, *LOCAL_CLUSTER],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=DAG_TIMEOUT_S + 120,
    )
    figures = {
        "targets": list(TARGETS),
        "cluster_start_seconds": slurm_cluster.start_seconds,
        "dag_seconds": round(time.monotonic() - started, 1),
    }
    (tmp_path / "slurm_figures.json").write_text(json.dumps(figures, indent=2))
    log = proc.stdout
    (tmp_path / "snakemake-slurm.log").write_text(log)
    assert proc.returncode != 124, (
        f"the Slurm run took over {DAG_TIMEOUT_S}s (SIGINT sent):\n{log[-6000:]}"
    )
    assert proc.returncode == 0, f"the Slurm run failed ({proc.returncode}):\n{log[-6000:]}"

    # Every job with outputs was submitted with sbatch; only target rules ran in-process.
    run_id = re.search(r"^SLURM run ID: (\S+)", log, re.M).group(1)
    submitted = {
        m.group(1): (m.group(2), Path(m.group(3)))
        for m in re.finditer(
            r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", log
        )
    }
    ran = _jobs(log)
    assert not [job for job in ran if job["local"] and job["outputs"]], "a job ran outside Slurm"
    slurm_jobs = [job for job in ran if not job["local"]]
    assert sorted((j["rule"], j["wildcards"]) for j in slurm_jobs) == sorted(
        (j["rule"], j["wildcards"]) for j in expected
    )
    assert sorted(submitted) == sorted(job["jobid"] for job in slurm_jobs)

    # ...and Slurm ran each one to completion: squeue, the completion log, the job's own log.
    states = slurm_cluster.squeue(run_id)
    records = slurm_cluster.completion_records()
    for job in slurm_jobs:
        slurm_id, slurm_log = submitted[job["jobid"]]
        assert states.get(slurm_id) == "COMPLETED", (job, states)
        record = records[slurm_id]
        assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", record
        assert record["Name"] == run_id and Path(record["WorkDir"]) == workdir, record
        text = slurm_log.read_text()
        assert "--executor slurm-jobstep" in text and f"rule {job['rule']}:" in text, slurm_log

    # Results equal the local run's, file by file (JSON without provenance, cost and timings).
    slurm_files, local_files = _result_files(workdir), _result_files(smoke_study)
    assert slurm_files
    assert not set(slurm_files) - set(local_files), "files the local run did not make"
    if "all" in TARGETS:
        assert set(slurm_files) == set(local_files)
    differ = [
        name for name, path in slurm_files.items() if not _same_content(path, local_files[name])
    ]
    assert not differ, f"results differ from the local run: {differ}"

    kinds = Counter(Path(name).suffix or name for name in slurm_files)
    rules = Counter(job["rule"] for job in slurm_jobs)
    figures.update(slurm_jobs=len(slurm_jobs), slurm_jobs_by_rule=rules, files_compared=kinds)
    (tmp_path / "slurm_figures.json").write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(f"\nSlurm smoke run: {json.dumps(figures)}")
