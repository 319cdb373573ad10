"""Shared fixtures. Tests run with one torch thread (see README and .ci/run)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
