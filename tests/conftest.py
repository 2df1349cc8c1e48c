import os

# one thread per test process: on a shared 2-core machine two threads can be far slower
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tools configure the root logger when they run in-process; each test starts as pytest set it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def irpe_bucket_cases() -> list:
    """Bucket tables computed by the reference iRPE implementation: the team's shared copy when
    it is beside the checkout, else the compressed copy in tests/data."""
    import gzip
    import json

    shared = SHARED / "data" / "irpe_buckets.json"
    if shared.is_file():
        return json.loads(shared.read_text())["cases"]
    with gzip.open(ROOT / "tests" / "data" / "irpe_buckets.json.gz", "rt") as f:
        return json.load(f)["cases"]


@pytest.fixture
def hub(tmp_path):
    """An empty torch hub cache in a temporary folder; yields its checkpoints folder."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)
