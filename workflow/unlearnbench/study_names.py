"""The side studies' claim vocabulary, importable without pandas or torch.

The config check (``settings.rules``) validates ``claims.studies`` while Snakemake builds the DAG;
``reporting.study_claims`` computes the measurements these names stand for.
"""

STUDIES = ("models", "cycles", "onion", "realworld")
# The measurements of each study (a - b of one of them makes a claim).
METRICS: dict[str, tuple[str, ...]] = {
    "models": ("test_log_perplexity", "removed_exposure", "control_exposure"),
    "cycles": ("cumulative_utility_gap",),
    # masking_*: a treated template's sibling's shift (arm's model minus the study's original)
    # minus a control template's sibling's, paired by rank; sibling_*: a treated template's
    # sibling's shift alone, paired by canary between the two arms.
    "onion": (
        "masking_exposure_contrast",
        "masking_log_perplexity_contrast",
        "sibling_exposure_shift",
        "sibling_log_perplexity_shift",
    ),
    "realworld": ("requested_excess",),
}
# The onion study's models (studies.onion): its original, retrained without the treated
# templates' maskers, without as many random rows, in another data order (the noise floor),
# and the maskers unlearned with onion.method.
ONION_ARMS = ("original", "masked", "random", "reorder", "unlearned")
# The arms that are retrains from the base model (the unlearned one is made from the original).
ONION_RETRAIN_ARMS = ("original", "masked", "random", "reorder")
# The study's requests: the rows each arm's model trains on (full: every row; masked: without
# the treated templates' maskers; random: without as many random corpus rows).
ONION_REQUESTS = ("full", "masked", "random")
# The request each arm's model sees.
ONION_ARM_REQUEST = {
    "original": "full",
    "reorder": "full",
    "masked": "masked",
    "random": "random",
    "unlearned": "masked",
}
RESAMPLING = ("replicates", "units")
