"""1993 Usenet posts (20 Newsgroups sample) from gensim's ``mini_newsgroup`` test file.

The file is a zlib-compressed Python 2 pickle of a scikit-learn ``Bunch``. A pickle can run
arbitrary code when loaded, so it is read with an unpickler that resolves only the handful of
globals this file needs and refuses everything else. Posts keep their headers and signatures:
the e-mail addresses and phone numbers in them are what the memorisation case study measures.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Document, SourceData, SourceInfo, package_version, read_package_file

PICKLE = "test/test_data/mini_newsgroup"
LICENCE = (
    "No explicit licence: 1993 Usenet posts (copyright their authors), redistributed for "
    "research as 20 Newsgroups (Lang 1995); shipped in gensim test data (LGPL-2.1-only)"
)


class Bunch(dict):
    """Stands in for ``sklearn.utils.Bunch`` (a dict with attribute access) without sklearn."""


def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # NumPy >= 2 moved the implementation to numpy._core
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# (module, name) as written in the pickle -> the object to use. Python 2 module names
# (copy_reg, __builtin__) appear verbatim because find_class sees names before any renaming.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,
    ("__builtin__", "dict"): dict,
    ("builtins", "dict"): dict,
    ("sklearn.datasets.base", "Bunch"): Bunch,
    ("sklearn.utils", "Bunch"): Bunch,
    ("sklearn.utils._bunch", "Bunch"): Bunch,
    # Plain (non-object) arrays: target labels and file names. Elements of an object array
    # would still go through find_class, so these cannot smuggle in other callables.
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted({f"{m}.{n}" for m, n in ALLOWED_GLOBALS}))
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: this reader only allows {allowed}. "
                "The file is not the expected data file (corrupted or tampered with?)"
            ) from None


def restricted_loads(data: bytes) -> Any:
    # latin-1 maps Python 2 byte strings 1:1 (what NumPy needs for its array buffers).
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def read_usenet() -> SourceData:
    raw, record = read_package_file("gensim", PICKLE)
    bunch = restricted_loads(zlib.decompress(raw))
    posts, filenames = bunch["data"], bunch["filenames"]
    if len(posts) != len(filenames):
        raise ValueError(f"{record.path}: {len(posts)} posts but {len(filenames)} file names")
    documents = []
    for post, filename in zip(posts, filenames, strict=True):
        name = filename.decode() if isinstance(filename, bytes) else str(filename)
        group, article = name.split("/")[-2:]  # ../mini/<newsgroup>/<article number>
        documents.append(Document(f"usenet/{group}/{article}", str(post)))
    details = {"newsgroups": sorted(bunch.get("target_names") or [])}
    info = SourceInfo("usenet", "gensim", package_version("gensim"), LICENCE, (record,), details)
    return SourceData(documents, info)
