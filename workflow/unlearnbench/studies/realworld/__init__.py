"""The real-world case study: unintended memorisation of naturally occurring strings.

No canary is injected: the e-mail addresses and phone numbers that occur in a real corpus
(``strings``) are scored under the original model against the base model it was fine-tuned
from, which never saw the corpus (``scoring``: memorisation in bits over that reference), the
most memorised form the unlearning request, and every unlearned model is scored again
(``stages``). Only masked ids ever reach a file.
"""

from .scoring import (
    Probe,
    Score,
    build_probe,
    candidate_log_perplexities,
    memorisation_bits,
    reference_log_perplexities,
    score_probes,
)
from .stages import (
    COLUMNS,
    RealworldConfig,
    decide_removal,
    find_secrets_stage,
    heldout_floor,
    score_secrets_stage,
    select_request,
)
from .strings import Occurrence, Secret, sensitive_strings, substitutes

__all__ = [
    "COLUMNS",
    "Occurrence",
    "Probe",
    "RealworldConfig",
    "Score",
    "Secret",
    "build_probe",
    "candidate_log_perplexities",
    "decide_removal",
    "find_secrets_stage",
    "heldout_floor",
    "memorisation_bits",
    "reference_log_perplexities",
    "score_probes",
    "score_secrets_stage",
    "select_request",
    "sensitive_strings",
    "substitutes",
]
