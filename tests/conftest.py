from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    if os.geteuid() == 0 and shutil.which("systemd-nspawn"):
        return
    skip = pytest.mark.skip(reason="lab tests need root and systemd-nspawn (run `make test`)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)
