"""Failed sign-ins, counted per (client address, user name): a password guesser is stopped after
a few tries, while the person whose name is guessed can still sign in from their own machine.

Argon2id already makes each guess cost ~0.7 s, but a guesser with time gets through a short
list. A lockout per user name would let any stranger lock a named analyst out by failing on
purpose; counting per address and name keeps the guesser's own address out instead. After
:data:`MAX_FAILURES` failures within :data:`WINDOW_S`, that pair is refused without checking the
password until the oldest failure leaves the window. A successful sign-in clears the pair.
Memory is bounded (:data:`MAX_PAIRS`, oldest dropped first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

MAX_FAILURES: Final = 5
WINDOW_S: Final = 15 * 60.0
MAX_PAIRS: Final = 10_000


class SigninThrottle:
    """Counts failed sign-ins per (address, user name); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, ()) if now - t < WINDOW_S]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def wait_s(self, address: str, user: str) -> float:
        """Seconds until ``user`` may try again from ``address`` (0: now)."""
        key, now = (address, user.casefold()), self._clock()
        with self._lock:
            recent = self._recent(key, now)
            if len(recent) < MAX_FAILURES:
                return 0.0
            return max(0.0, WINDOW_S - (now - recent[-MAX_FAILURES]))

    def failed(self, address: str, user: str) -> None:
        key, now = (address, user.casefold()), self._clock()
        with self._lock:
            recent = self._recent(key, now)
            self._failures[key] = [*recent, now][-MAX_FAILURES:]
            self._failures.move_to_end(key)
            while len(self._failures) > MAX_PAIRS:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, user: str) -> None:
        with self._lock:
            self._failures.pop((address, user.casefold()), None)
