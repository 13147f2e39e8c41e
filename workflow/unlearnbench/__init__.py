"""unlearnbench: machine unlearning for language models, as a reproducible benchmark.

One module per concept: ``seeding`` (named seed streams), ``provenance`` (what produced a result,
atomic writes), ``settings`` (cross-field config checks), ``corpora`` (offline and hub text),
``tokenizer`` (digit-splitting BPE), ``canaries`` (Secret Sharer canaries and forget sets).
"""

__version__ = "0.1.0"
