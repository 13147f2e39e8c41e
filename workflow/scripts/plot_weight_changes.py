"""Adapter of rule plot_weight_changes (workflow/rules/report.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.logs import start_log
from unlearnbench.reporting.figures_unlearning import make_weight_change_figure

log = start_log(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
make_weight_change_figure(list(inp.frontiers), snakemake.params.methods, out.png, out.pdf)
log.info("wrote %s and %s", out.png, out.pdf)
