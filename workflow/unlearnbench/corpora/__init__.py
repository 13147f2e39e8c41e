"""Text corpora: offline sources shipped in pip packages (or any ``datasets`` corpus), segmented
into deterministic train/validation/test parquet splits with a manifest of where they came from.

``prepare_corpus`` is the one entry point the workflow uses; ``mask_email`` is shared with the
reports, which show real people's addresses only masked.
"""

from ..pii import count_pii, mask_email, mask_pii
from .base import Document, SourceData, SourceInfo
from .prepare import prepare_corpus
from .sources import SOURCES, read_source
from .splits import SPLITS, SplitConfig

__all__ = [
    "SOURCES",
    "SPLITS",
    "Document",
    "SourceData",
    "SourceInfo",
    "SplitConfig",
    "count_pii",
    "mask_email",
    "mask_pii",
    "prepare_corpus",
    "read_source",
]
