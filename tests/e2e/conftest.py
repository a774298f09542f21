"""Fixtures for the end-to-end tests (see ``linkerd_proxy.testing.mesh``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from linkerd_proxy.testing.mesh import Mesh, start_mesh


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    yield from start_mesh()
