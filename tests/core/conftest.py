"""Fixtures of the core tests: moto's S3-protocol server, one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import moto_server

from georank.config import S3Config


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Config]:
    """An S3Config for a moto server on 127.0.0.1, path-style, for the module's tests."""
    with moto_server() as url:
        yield S3Config(endpoint_url=url, path_style=True)
