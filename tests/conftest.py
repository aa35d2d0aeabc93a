"""Shared test configuration."""

from __future__ import annotations

import os

# Decode pools and the private loop thread are per process; keep thread counts predictable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
