"""Hypothesis settings of the fuzz tier: deterministic and modest in CI, long on request.

``INTELBUS_FUZZ_PROFILE`` picks the profile:

* ``ci`` (default): ``derandomize=True`` (the same examples every run, so a CI failure reproduces
  and a pass means the same thing each time), a modest example count, no example database.
* ``long``: random seeds and many more examples, for a local hunt, e.g.
  ``INTELBUS_FUZZ_PROFILE=long .venv/bin/pytest tests/fuzz -q``. Anything it finds belongs in
  tests/fuzz/corpus/<target>/ so every CI run replays it.

Only the fuzz tests use these settings; nothing here changes Hypothesis's global profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "INTELBUS_FUZZ_PROFILE"
_PROFILES = {
    "ci": settings(
        derandomize=True,
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ),
    "long": settings(
        max_examples=20_000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ),
}
_name = os.environ.get(PROFILE_ENV, "ci")
if _name not in _PROFILES:
    raise ValueError(f"{PROFILE_ENV}={_name!r}: expected one of {', '.join(_PROFILES)}")
FUZZ = _PROFILES[_name]
