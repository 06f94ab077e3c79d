"""Fixtures shared by every test package."""
import os

import pytest

# ablate reads its store URLs from these when no option is given: a developer's shell pointing
# them at a real database or server must not make the tests write there.
for _name in ("ABLATE_DB", "ABLATE_TRACKING_URI", "ABLATE_OPTUNA_STORAGE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forward/backward passes run fastest on one thread, more so when the cores are shared.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
