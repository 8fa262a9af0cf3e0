"""One run of the README walkthrough per test session, shared by this folder's tests."""

from __future__ import annotations

import pytest

from tests.walkthrough.workspace import Walked, walk


@pytest.fixture(scope="package")
def walked(tmp_path_factory: pytest.TempPathFactory, bootstrap: str) -> Walked:
    return walk(tmp_path_factory.mktemp("readme"), bootstrap)
