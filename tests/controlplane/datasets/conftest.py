"""Fixtures of the dataset tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def staging(settings, tmp_path) -> Path:
    settings.DATASET_STAGING_DIR = tmp_path / "uploads"
    settings.VAR_DIR = tmp_path / "var"
    return settings.DATASET_STAGING_DIR
