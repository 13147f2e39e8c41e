"""Adapter of rule tabulate_results (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.tables import make_main_table

log = start_log(snakemake.log[0])
inp = snakemake.input
table = make_main_table(
    list(inp.evaluations),
    list(inp.manifests),
    list(inp.fisher),
    snakemake.params.methods,
    dict(snakemake.output.items()),
)
log.info("main results: %d rows from %d evaluations", len(table.data), len(inp.evaluations))
