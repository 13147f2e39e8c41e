"""Adapter of rules unlearn (unlearn.smk) and unlearn_realworld (realworld.smk): one method, one
request; then the saved model is scored in the same process, as rule evaluate (nlp: output
metrics) or the real-world re-scoring (output secrets and scored) would score it."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher_estimation import FisherConfig
from unlearnbench.stage import record_stage, run_stage
from unlearnbench.unlearning import unlearn_stage

params = dict(snakemake.params.items())
inp, out, wc = snakemake.input, snakemake.output, snakemake.wildcards
seed = params["seed"]
fisher_paths = (inp.fisher_tensors, inp.fisher_meta) if hasattr(inp, "fisher_tensors") else None
out_dir = Path(out.model[0]).parent
tokenizer_dir = Path(inp.tokenizer).parent

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": seed, "eval": seed},
    lambda log: unlearn_stage(
        wc.method,
        params["hyper"],
        model_dir=Path(inp.model[0]).parent,
        tokenizer_dir=tokenizer_dir,
        train_path=inp.train,
        forget_path=inp.forget,
        retain_path=inp.retain,
        canaries_path=getattr(inp, "canaries", None),
        fisher_paths=fisher_paths,
        fisher_cfg=FisherConfig(**params["fisher"], seed=seed),
        trajectory=params["trajectory"],
        seed=seed,
        out_dir=out_dir,
    ),
    threads=snakemake.threads,
)

log = logging.getLogger("unlearnbench")
if hasattr(out, "metrics"):  # rule unlearn; unlearn_realworld writes secrets
    from unlearnbench.evaluation import record_metrics

    record_metrics(out.metrics, out_dir, wc.dataset, params["evaluate"], seed, inp, log)
else:
    from unlearnbench.realworld import RealworldConfig, score_secrets_stage

    cfg = RealworldConfig(**params["realworld"], seed=seed)
    log.info("scoring %s", out_dir)
    record_stage(
        out.scored,
        {"realworld": params["realworld"], "seed": seed},
        {"eval": seed},
        lambda log: score_secrets_stage(
            out_dir,
            tokenizer_dir,
            inp.train,
            [inp.validation, inp.test],
            cfg,
            inp.reference,
            inp.heldout_reference,
            out.secrets,
        ),
        log,
    )
