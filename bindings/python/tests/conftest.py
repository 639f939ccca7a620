"""Shared paths: the repository's fixtures and samples (pytest runs from a clone)."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLES = ROOT / "samples"


def reference_dir():
    """The shared reference folder (ResNet-18's 45 MB weights are not in the repo):
    CAMSTREAM_REFERENCE_DIR; missing, the test is skipped, or fails under CI=true."""
    d = os.environ.get("CAMSTREAM_REFERENCE_DIR")
    if d and Path(d).is_dir():
        return Path(d)
    if os.environ.get("CI") == "true":
        pytest.fail("CAMSTREAM_REFERENCE_DIR must name the reference folder under CI=true")
    pytest.skip("set CAMSTREAM_REFERENCE_DIR to ../shared/reference to run this test")
