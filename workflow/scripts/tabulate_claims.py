"""Adapter of rule tabulate_claims (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.protocol_tables import make_claims_table
from unlearnbench.reporting.study_claims import StudyFiles

log = start_log(snakemake.log[0])
params, inp = snakemake.params, snakemake.input
result = make_claims_table(
    list(inp.frontiers),
    params.rules,
    params.datasets,
    params.bootstrap,
    dict(snakemake.output),
    study_rules=params.studies,
    confirmatory_replicates=params.confirmatory_replicates,
    study_files=StudyFiles(
        evaluations=list(inp.study_evaluations),
        onion_canaries=list(inp.onion_canaries),
        secrets=list(inp.secrets),
    ),
)
for row in result.itertuples():
    log.info("%s: %s (estimate %s, Holm p %s)", row.id, row.verdict, row.estimate, row.p_holm)
