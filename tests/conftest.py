"""Fixtures shared by every test package."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forward/backward passes run fastest on one thread, more so when the cores are shared.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
