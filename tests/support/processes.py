"""Running Python in a child process on this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

#: The checkout the tests run from; children import dicomslide from here, not from site-packages.
ROOT = Path(__file__).resolve().parents[2]


def run_python(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` with this checkout first on ``PYTHONPATH``, capturing text output.

    Parameters
    ----------
    *args: str
        Arguments after the interpreter (``-m module ...``, ``-c code ...``, a script)
    cwd: pathlib.Path | None
        Working directory (the caller's when None)
    env: Mapping[str, str] | None
        Variables to set on top of this process's environment
    timeout: float
        Seconds before the child is killed and :class:`subprocess.TimeoutExpired` raised

    Returns
    -------
    subprocess.CompletedProcess[str]
        The finished child; its return code is not checked
    """
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )
