"""Adapter of rule inject_onion_canaries (workflow/rules/onion.smk): the onion study's split
with sibling canaries, its canary table and its requests."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.stage import run_stage
from unlearnbench.studies.onion import REQUESTS, OnionConfig, inject_siblings, write_onion_data
from unlearnbench.texts import read_texts

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
dataset = snakemake.wildcards.dataset
cfg = OnionConfig(**params["onion"], secret_digits=params["secret_digits"], seed=params["seed"])
# output.requests lists forget_set.json then retain_set.json of each request, in REQUESTS order.
request_paths = {
    request: {"forget": out.requests[2 * i], "retain": out.requests[2 * i + 1]}
    for i, request in enumerate(REQUESTS)
}


def work(frame):
    result = inject_siblings(
        dataset, cfg, read_texts([inp.train]), read_texts([inp.validation, inp.test])
    )
    return write_onion_data(
        result, cfg, dataset, {"train": out.train, "canaries": out.canaries}, request_paths
    )


run_stage(out.manifest, snakemake.log[0], params, {"canaries": params["seed"]}, work)
