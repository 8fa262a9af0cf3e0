"""Reloading an agency's sharing policy when its file changes while the consumer runs.

A policy edited while a consumer runs must not be silently ignored: records judged afterwards
would carry the old policy's hash and follow the old rules. Once per poll loop (never per record)
the consumer asks :meth:`PolicyWatch.changed` for a new policy:

1. ``stat`` the file: the same (inode, size, mtime) as last time means no change (the common
   case, one system call);
2. otherwise hash its bytes: the same bytes (a ``touch``) mean no change either;
3. otherwise load it (:meth:`SharingPolicy.load`). A file that loads is the new policy (the
   pipeline builds a new judge ``Reader`` with it, so its hash is on every later decision); a file
   that does not load stops the consumer before it judges another batch
   (:class:`~intelbus.errors.PolicyReloadFailed`, exit 3), so no record is judged under a policy
   nobody meant. Write a new policy atomically (write beside it, then ``mv``) so that a consumer
   never reads half a file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from intelbus.errors import ConfigError, PolicyReloadFailed
from intelbus.log import get_logger
from intelbus.policy.rules import SharingPolicy

log = get_logger("consumers.policy_watch")


@dataclass(frozen=True, slots=True)
class FileMark:
    """What identifies one version of a file cheaply: where it is, its size and change time."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileMark | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class PolicyWatch:
    """Watches one policy file for an agency; remembers the version last loaded."""

    def __init__(self, path: Path, agency: str) -> None:
        """Load the policy the consumer starts with.

        Raises:
            ConfigError: it does not load, or is another agency's.
        """
        self.path = path
        self.agency = agency
        # Marked before loading: a change made while we load is seen at the first check.
        self._mark = FileMark.of(path)
        self._digest = _digest(path)
        self.policy = SharingPolicy.load(path)
        if self.policy.agency != agency:
            raise ConfigError(
                f"the sharing policy {path} is {self.policy.agency}'s, not {agency}'s"
            )

    def changed(self) -> SharingPolicy | None:
        """The new policy if the file now holds a different one, else None.

        Raises:
            PolicyReloadFailed: the file changed and does not load (or is another agency's, or
                is gone). Nothing is swapped.
        """
        mark = FileMark.of(self.path)
        if mark is not None and mark == self._mark:
            return None
        digest = _digest(self.path)
        if digest is not None and digest == self._digest:
            self._mark = mark
            return None
        try:
            if mark is None or digest is None:
                raise ConfigError(f"cannot read the sharing policy {self.path}")
            policy = SharingPolicy.load(self.path)
            if policy.agency != self.agency:
                raise ConfigError(f"the policy is {policy.agency}'s, not {self.agency}'s")
        except ConfigError as e:
            # No traceback: the error's one-line message, said by the caller, is the story.
            log.error(  # noqa: TRY400
                "policy.reload_failed", path=str(self.path), policy_hash=self.policy.policy_hash
            )
            raise PolicyReloadFailed(
                f"the sharing policy {self.path} changed while the consumer ran and does not "
                f"load ({e}); stopped before judging another batch (policy "
                f"{self.policy.policy_hash[:12]} was in force): fix the file and restart"
            ) from None
        self._mark, self._digest = mark, digest
        old, self.policy = self.policy, policy
        if policy.policy_hash == old.policy_hash:
            return None  # the same rules written differently (a comment, the order of keys)
        log.warning(
            "policy.reloaded",
            path=str(self.path),
            old_hash=old.policy_hash,
            new_hash=policy.policy_hash,
        )
        return policy
