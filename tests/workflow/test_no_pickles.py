"""Nothing loads pickles from results, and no hub code is trusted.

Models, checkpoints and Fisher artifacts are safetensors + JSON; the only unpickler in the
package reads a file shipped inside a pinned pip package, and resolves only the classes that
file needs (unlearnbench.corpora.usenet.RestrictedUnpickler).
"""

from __future__ import annotations

import re

from snakemake_runner import REPO

SOURCES = sorted((REPO / "workflow").rglob("*.py"))


def code_lines(path):
    """Source lines without comments and docstring-only lines (good enough for a scan)."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.split("#", 1)[0]
        if stripped.strip():
            yield number, stripped


def test_sources_were_found():
    assert len(SOURCES) > 30


def test_no_pickle_based_loading():
    forbidden = re.compile(r"torch\.load\(|pickle\.loads?\(|joblib|numpy\.load\(|np\.load\(")
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in SOURCES
        for n, line in code_lines(path)
        if forbidden.search(line)
    ]
    assert not hits, "pickle-based loading:\n" + "\n".join(hits)


def test_only_the_restricted_unpickler_touches_pickle():
    users = {
        str(path.relative_to(REPO))
        for path in SOURCES
        for _, line in code_lines(path)
        if re.search(r"\bpickle\b", line)
    }
    assert users <= {"workflow/unlearnbench/corpora/usenet.py"}, users


def test_trust_remote_code_is_never_enabled():
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in SOURCES
        for n, line in code_lines(path)
        if re.search(r"trust_remote_code\s*=\s*True", line)
    ]
    assert not hits, hits
