"""Adapter of rule verify (workflow/rules/report.smk): re-check results/ against what every
stage recorded; list what was changed since, and fail if anything was."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.artifacts import verify_tree
from unlearnbench.logs import start_log

log = start_log(snakemake.log[0])
report = verify_tree(snakemake.params.root)
log.info("%d recorded files and results checked", len(report["checked"]))
log.info(
    "%d files with no record (tables, figures, report): not checked", len(report["unrecorded"])
)
for line in report["changed"]:
    log.error("changed: %s", line)
if report["changed"]:
    sys.exit(
        f"verify: {len(report['changed'])} of {len(report['checked'])} recorded files differ from "
        "what their stages wrote:\n  " + "\n  ".join(report["changed"]) + "\nfix: delete them and "
        "run snakemake again to rebuild them (or --forcerun the rule that writes them)"
    )
print(f"verify: all {len(report['checked'])} recorded files are as their stages wrote them")
