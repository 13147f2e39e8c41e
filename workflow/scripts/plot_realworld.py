"""Adapter of rule plot_realworld (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.figures_studies import make_realworld_figure

log = start_log(snakemake.log[0])
inp, out, params = snakemake.input, snakemake.output, snakemake.params
make_realworld_figure(
    list(inp.secrets),
    params.methods,
    params.memorised_above,
    params.removed_below,
    out.png,
    out.pdf,
)
log.info("wrote %s and %s", out.png, out.pdf)
