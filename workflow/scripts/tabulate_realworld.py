"""Adapter of rule tabulate_realworld (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.tables import make_realworld_table

log = start_log(snakemake.log[0])
params = snakemake.params
table = make_realworld_table(
    list(snakemake.input.secrets),
    params.removed_below_bits,
    params.methods,
    params.max_rows,
    dict(snakemake.output.items()),
    params.indelible_margin,
)
log.info("real-world table: %d memorised strings shown (masked)", len(table.data))
