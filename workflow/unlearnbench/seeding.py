"""One base seed, many independent named streams.

Every random choice in the study draws from a stream named after its purpose (``split``,
``canaries``, ``init``, ``data_order``, ``dp``, ``unlearn``, ``eval``), derived from the base seed
and any extra keys (dataset name, cycle, ...). Changing how one stage draws numbers then never
shifts another stage's numbers, and two runs with the same config are bitwise identical on CPU.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np

STREAMS = ("split", "canaries", "init", "data_order", "dp", "unlearn", "eval")


def derive_seed(base_seed: int, stream: str, *keys: object) -> int:
    """A 63-bit seed for ``stream`` (one of STREAMS), stable across Python versions and platforms.

    Hashing (not ``hash()``, which is salted per process) keeps the value reproducible.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}; known streams: {', '.join(STREAMS)}")
    text = "/".join([str(int(base_seed)), stream, *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def numpy_rng(base_seed: int, stream: str, *keys: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(base_seed, stream, *keys))


def python_rng(base_seed: int, stream: str, *keys: object) -> random.Random:
    return random.Random(derive_seed(base_seed, stream, *keys))


def torch_generator(base_seed: int, stream: str, *keys: object):
    """A CPU ``torch.Generator`` for the stream (torch imported lazily: data stages skip it)."""
    import torch

    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(base_seed, stream, *keys))
    return gen


def seed_everything(base_seed: int, stream: str, *keys: object) -> int:
    """Seed the global Python, NumPy and torch generators (for library code we don't control)."""
    seed = derive_seed(base_seed, stream, *keys)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:
        return seed
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def data_order_seed(replicate_seed: int, order: str) -> int:
    """The seed of a training run's data order: the replicate's, or (``order`` a non-empty
    key, e.g. ``retrained_reorder``) another one derived from it, for a retrain's twin."""
    return derive_seed(replicate_seed, "data_order", order) if order else replicate_seed
