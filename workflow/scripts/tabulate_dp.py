"""Adapter of rule tabulate_dp (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.tables import make_dp_table

log = start_log(snakemake.log[0])
inp = snakemake.input
table = make_dp_table(
    list(inp.evaluations),
    list(inp.manifests),
    snakemake.params.methods,
    dict(snakemake.output.items()),
    snakemake.params.repetitions,
)
log.info("DP-SGD table: %d rows", len(table.data))
