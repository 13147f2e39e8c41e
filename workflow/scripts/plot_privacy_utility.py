"""Adapter of rule plot_privacy_utility (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.figures_frontier import make_privacy_utility_figure

log = start_log(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
make_privacy_utility_figure(
    list(inp.evaluations), list(inp.frontiers), snakemake.params.methods, out.png, out.pdf
)
log.info("wrote %s and %s", out.png, out.pdf)
