"""kmock with the resources the operator watches and creates (tests/kube_api.py)."""

import pytest

from tests.kube_api import declare_resources


@pytest.fixture
async def cluster(kmock):
    """The Kubernetes API emulator, ready for the operator."""
    declare_resources(kmock)
    yield kmock
