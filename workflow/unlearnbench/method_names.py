"""The unlearning methods' names, importable without torch.

Snakemake reads these while it builds the DAG (which rules wait for the Fisher estimate), and
importing the methods themselves would cost every `snakemake -n` the seconds torch takes to load.
tests/unit/unlearning/test_unlearning.py keeps this list equal to the registry and to the config
schema.
"""

METHODS = (
    "fisher_removal",
    "fisher_forgetting",
    "fisher_removal_identity",
    "gradient_ascent",
    "grad_diff",
    "npo",
    "finetune_retain",
)

# Methods that read the stored inverse-Fisher estimate of D+ at the original weights.
NEEDS_FISHER = frozenset({"fisher_removal", "fisher_forgetting"})
# Methods whose step reads the fisher settings (the Fisher's damping, without the Fisher).
READS_FISHER_SETTINGS = NEEDS_FISHER | {"fisher_removal_identity"}


def needs_fisher(method: str) -> bool:
    return method in NEEDS_FISHER


def reads_fisher_settings(method: str) -> bool:
    return method in READS_FISHER_SETTINGS
