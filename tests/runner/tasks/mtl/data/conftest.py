import shutil

import pytest

from runner.tasks.mtl.data.synth import write_synthetic_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small shared synthetic set (read-only: copy it before modifying)."""
    root = tmp_path_factory.mktemp("miniscapes")
    write_synthetic_dataset(root, 24, 6, size=(64, 128), seed=3)
    return root


@pytest.fixture
def root_copy(synth_root, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(synth_root, dst)
    return dst
