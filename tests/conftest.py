"""Fixtures every test folder may use."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test: the networks in tests are tiny, so one thread
    is faster, and it keeps a test steady on a machine that runs other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
