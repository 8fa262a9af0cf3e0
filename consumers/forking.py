"""What every forked worker process of a consumer or an auditor does first."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when ``parent`` dies, even by SIGKILL (a pool worker
    holds its own copy of the task pipe, so it would otherwise wait on it for ever)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux: workers exit on EOF only
        return
    if os.getppid() != parent:  # the parent died before the call above took effect
        os._exit(1)
