"""The paper's studies beyond one unlearning request, one module each:

- ``cycles``: K sequential unlearning requests, each from the previous request's model.
- ``onion``: the onion effect (what removing a template's masker does to its sibling canaries).
- ``fisher_scaling``: how Fisher estimation's time and memory grow with m and model size.
- ``realworld``: unintended memorisation of naturally occurring strings, and its unlearning.

This face imports none of them: each study's rule imports only its own module, so editing one
study reruns only that study's jobs (the rules' ``code=`` inputs follow the imports).
"""
