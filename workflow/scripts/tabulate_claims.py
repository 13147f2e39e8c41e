"""Adapter of rule tabulate_claims (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.protocol_tables import make_claims_table

log = start_log(snakemake.log[0])
params = snakemake.params
result = make_claims_table(
    list(snakemake.input.frontiers),
    params.rules,
    params.datasets,
    params.bootstrap,
    dict(snakemake.output),
)
for row in result.itertuples():
    log.info("%s: %s (estimate %s, Holm p %s)", row.id, row.verdict, row.estimate, row.p_holm)
