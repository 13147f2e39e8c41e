"""The side studies' claim vocabulary, importable without pandas or torch.

The config check (``settings.rules``) validates ``claims.studies`` while Snakemake builds the DAG;
``reporting.study_claims`` computes the measurements these names stand for.
"""

STUDIES = ("models", "cycles", "onion", "realworld")
# The measurements of each study (a - b of one of them makes a claim).
METRICS: dict[str, tuple[str, ...]] = {
    "models": ("test_log_perplexity", "removed_exposure", "control_exposure"),
    "cycles": ("cumulative_utility_gap",),
    "onion": ("control_exposure_shift", "control_log_perplexity_shift"),
    "realworld": ("requested_excess",),
}
# The onion study's two arms: retrained models on D minus S, or the unlearning method.
ONION_POINTS = ("retrain", "unlearn")
ONION_SELECTIONS = ("targeted", "random")
RESAMPLING = ("replicates", "units")
