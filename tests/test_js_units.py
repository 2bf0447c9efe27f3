"""The JavaScript unit tests (tests/js, Node's built-in runner) as part of pytest."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_js_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed; the JS unit tests need Node 20+")
        pytest.skip("node is not installed; the JS unit tests need Node 20+")
    result = subprocess.run(
        [node, "--test", "tests/js/"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
