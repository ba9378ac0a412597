"""System programs that some tests need (kubectl, haproxy, postgres, ...).

Where one is missing, a test skips with the reason on a developer's machine, and fails when
the environment has CI=true: CI installs them (.ci/system-packages.sh), so a missing one
there is a broken set-up, not a reason to pass quietly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# Debian puts some daemons outside a normal user's PATH.
EXTRA_DIRS = ("/usr/sbin", "/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(program: str, package: str | None = None) -> str:
    """The path of ``program``; skip (or, in CI, fail) the calling test when there is none."""
    path = shutil.which(program) or shutil.which(program, path=os.pathsep.join(EXTRA_DIRS))
    if path:
        return path
    reason = (
        f"{program} is not installed (Debian package {package or program}; "
        "bash .ci/system-packages.sh installs it)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def node_tests(path: Path) -> str:
    """Run a file of the page's ``node --test`` tests; their TAP output, asserted to pass."""
    node = require("node", "nodejs")
    result = subprocess.run(
        [node, "--test", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout, result.stdout
    return result.stdout
