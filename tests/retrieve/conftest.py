"""Fixtures of the index/retrieval tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from retrieve_helpers import tiny_gallery


@pytest.fixture(scope="module")
def gallery() -> tuple[np.ndarray, np.ndarray, pa.Table]:
    return tiny_gallery()
