"""The synthetic study the reporting tests read (built once; tests write their outputs to their
own tmp_path)."""

from __future__ import annotations

import pytest
from synthetic_study import Study, build_study


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Study:
    return build_study(tmp_path_factory.mktemp("study"))
