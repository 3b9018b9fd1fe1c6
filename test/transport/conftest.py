"""DDS domain ids claimed per test, so concurrent test sessions never share one."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def domain() -> Callable[[], int]:
    """Factory: a fresh domain id for each call (claimed until the test process exits)."""
    from dsp_driving.transport.dds import claim_domain_id

    return claim_domain_id
