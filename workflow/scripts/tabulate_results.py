"""Adapter of rule tabulate_results (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.protocol_tables import make_main_table

log = start_log(snakemake.log[0])
inp = snakemake.input
table = make_main_table(
    list(inp.evaluations), list(inp.frontiers), snakemake.params.methods, dict(snakemake.output)
)
log.info("main results: %d rows from %d frontiers", len(table.data), len(inp.frontiers))
