"""Failed sign-ins are counted per (client address, user name) (web/throttle.py): a guesser is
stopped after a few tries, the password is not even checked meanwhile, and another user, or the
same user after a success or after the window, is not affected."""

from __future__ import annotations

import time
from pathlib import Path

from tests.taxii_store import fill, users_file
from tests.webconsole import RunningConsole
from web.throttle import MAX_FAILURES, WINDOW_S, SigninThrottle

PASSWORD = "the real one, long enough"  # noqa: S105 - a test user's


def test_the_counter_per_address_and_name() -> None:
    now = [0.0]
    throttle = SigninThrottle(clock=lambda: now[0])
    for _ in range(MAX_FAILURES - 1):
        throttle.failed("10.0.0.9", "Ana")
        now[0] += 1
    assert throttle.wait_s("10.0.0.9", "ana") == 0
    throttle.failed("10.0.0.9", "ANA")  # names compared case-insensitively
    assert throttle.wait_s("10.0.0.9", "ana") > WINDOW_S - MAX_FAILURES - 1
    assert throttle.wait_s("10.0.0.7", "ana") == 0  # ana's own machine
    assert throttle.wait_s("10.0.0.9", "bob") == 0
    now[0] += WINDOW_S
    assert throttle.wait_s("10.0.0.9", "ana") == 0  # the window passed
    for _ in range(MAX_FAILURES):
        throttle.failed("10.0.0.9", "ana")
    throttle.succeeded("10.0.0.9", "ana")
    assert throttle.wait_s("10.0.0.9", "ana") == 0


def test_a_guesser_is_stopped_without_the_password_being_checked(tmp_path: Path) -> None:
    fill(tmp_path / "herts.sqlite")
    users = users_file(tmp_path / "u.json", ("ana", PASSWORD, None), ("bob", PASSWORD, None))
    config = tmp_path / "herts.toml"
    config.write_text(
        f'agency = "herts-police"\nkey_file = "k"\ndirectory = "d"\npolicy = "p.toml"\n'
        f'store = "{tmp_path / "herts.sqlite"}"\nenvironment = "test"\n[web]\nusers_file = "{users}"\n'
    )
    running = RunningConsole(config)
    try:
        guesser = running.client()
        for n in range(MAX_FAILURES):
            assert guesser.sign_in("ana", f"guess {n}").status == 401
        stopped = guesser.sign_in("ana", PASSWORD)  # even the right one: not checked now
        assert stopped.status == 429
        assert "Too many failed sign-ins" in stopped.body
        assert "intelbus" not in guesser.cookies
        # Another user from the same address is not held back.
        assert running.client().sign_in("bob", PASSWORD).status == 303
        # After the window, ana signs in (the console's own counter, its clock moved on).
        later = time.monotonic() + WINDOW_S + 1
        running.console.throttle._clock = lambda: later
        ana = running.client()
        assert ana.sign_in("ana", PASSWORD).status == 303
        assert ana.get("/no-such-page").status == 404
    finally:
        running.stop()
