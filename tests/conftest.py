"""Shared by every test tier. Its folder is on sys.path, so tests import helpers such as ``tgi_contract``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a whole run, the unit tier first: a broken core fails in seconds, not after the integration tier."""
    # A stable sort keeps each module's tests together, so module-scoped fixtures still start once.
    items.sort(key=lambda item: "integration" in item.path.parts)
