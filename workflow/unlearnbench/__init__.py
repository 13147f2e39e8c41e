"""unlearnbench: machine unlearning for language models, as a reproducible benchmark.

The map, in the order the study runs (each rule of workflow/rules/ calls one stage of these
through its adapter in workflow/scripts/):

Frame and bookkeeping
    ``settings``        the config checked before any job (schema + cross-field rules, the
                        hub model's pin and vocabulary)
    ``planner``         each heavy rule's memory and time from the config: refusals, requests
    ``stage``           the adapters' frame: log, threads, device, cost, provenance
    ``compute``         the job's device and precision (GPU from the rule's resources, bf16
                        autocast regions), models placed in float32
    ``replicate``       one replicate's files and seed, as one value
    ``provenance``, ``logs``, ``seeding``   what produced a result; logs and progress bars;
                        named seed streams
    ``import_graph``    the rules' ``code=`` inputs, read from the imports
    ``method_names``    the unlearning methods' names, without torch (read at DAG build)

Data
    ``corpora/``        offline (pip-shipped) and hub text into train/validation/test splits
    ``download``        every hub asset of a config fetched into the cache (offline clusters)
    ``pii``             finding and masking e-mail addresses and phone numbers
    ``texts``           reading splits and the retained set back
    ``tokenizer``       byte-level BPE with one token per digit, or the hub model's own
    ``canaries``        Secret Sharer canaries, the forget set D- and the retained set D+
    ``lm_data``         texts as token sequences, batches and the LM loss

Models and training
    ``models``          GPT-2 from scratch or a hub model (pinned, float32); context length;
                        safetensors; fingerprints
    ``training/``       the training loop, checkpoints, the training stages, DP-SGD (Opacus;
                        its grad-sample routes for GPT-2 and OPT, the accounting)
    ``dp_budget``       DP-SGD's step budget and whether an epsilon is reachable, without torch
                        (read at DAG build)

Second-order information and unlearning
    ``fisher/``         per-example gradients and the inverse empirical Fisher (Woodbury)
    ``unlearning/``     the methods (Fisher Removal, Fisher Forgetting, F = lambda I, gradient
                        ascent, GradDiff, NPO, fine-tuning), each method's frontier and its
                        operating points chosen on tuning canaries; one request

Measurement
    ``exposure/``       canary exposure for any tokenizer (exact: digit tree or token trie;
                        extrapolated), extraction
    ``evaluation/``     every model scored the same way: perplexity and KL to the retrained
                        model, exposure and extraction by canary role, membership inference,
                        forget quality, over-unlearning

Studies and reporting
    ``studies/``        unlearning cycles, the onion effect, Fisher scaling, real-world strings
    ``reporting/``      the claims' verdicts (bootstrap, Holm), tables and figures from the
                        metrics and frontier files (no torch)
"""

__version__ = "0.1.0"
