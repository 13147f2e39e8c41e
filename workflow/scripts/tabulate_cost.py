"""Adapter of rule tabulate_cost (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.tables import make_cost_table

log = start_log(snakemake.log[0])
table = make_cost_table(list(snakemake.input.benchmarks), dict(snakemake.output.items()))
log.info(
    "cost table: %d rules from %d benchmark files", len(table.data), len(snakemake.input.benchmarks)
)
