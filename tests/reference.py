"""Where the shared real-world reference data is: ``../shared/data`` beside the checkout.

``WANGGE_SHARED_DATA`` points elsewhere. A missing file fails the test that needs it (it does
not skip): CI has the data beside the checkout, and a silent skip would hide lost coverage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get(
        "WANGGE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


def reference_path(name: str) -> Path:
    """Return the path of the shared reference file ``name``; fail the test if it is missing."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.fail(
            f"reference data {path} is missing: tests need ../shared/data beside the checkout "
            "(or WANGGE_SHARED_DATA)",
            pytrace=False,
        )
    return path
