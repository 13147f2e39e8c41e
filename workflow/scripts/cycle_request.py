"""Adapter of rule cycle_request (workflow/rules/unlearn.smk): the retained set after the first
k requests of the cycle study (D minus groups 1..k), the training set of request k's retrained
model."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.artifacts import describe_files
from unlearnbench.provenance import write_json
from unlearnbench.stage import run_stage
from unlearnbench.texts import request_retain_set

inp, out = snakemake.input, snakemake.output
k = int(snakemake.wildcards.request)


def work(frame):
    retain = request_retain_set(inp.retain, inp.forget, list(range(1, k + 1)))
    write_json(out.retain, retain)
    return {
        "request": k,
        "retained_rows": len(retain["indices"]),
        "files": describe_files([out.retain]),
    }


run_stage(out.manifest, snakemake.log[0], dict(snakemake.params.items()), {}, work)
