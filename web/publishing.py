"""The producer console's desk: what its pages do that is not HTTP.

One :class:`Desk` per console (kept in ``ConsoleSettings.extras``) holds the publisher, built
lazily from the console's producer config the first time a page needs it (a console whose key or
directory is unusable still shows its sign-in page, and says why on the report page). Everything
that touches the publisher or its state runs under the desk's lock: the publisher's state file is
one SQLite connection, and publishing is serialised (one sequence, one chain).

* :meth:`Desk.preview`: before anything is sealed, the agencies the sharing agreement gives a
  record to (``Publisher.recipients_for``) and, for each whose sharing policy the console holds
  (``[web] partner_policies``), what that policy would do with it (store, redact which fields,
  withhold). A refusal (:class:`~intelbus.errors.NoRecipients`) is the preview's answer, not an
  error.
* :meth:`Desk.publish`: the publisher's ``preflight`` before the first record, then ``publish``;
  every expected failure becomes one line (:class:`Outcome`), and what was reserved stays pending.
  The console keeps a copy of what it published (``ProducerState.keep_copy``) so the officer can
  correct it later; a correction replaces the copy with its replacement.
* :func:`form_values`: a kept copy as the report form's values (the correction form's start).

Logs name record ids and counts only, never contents.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intelbus.directory.model import Role
from intelbus.errors import (
    ConfigError,
    IntelbusError,
    KafkaUnavailableError,
    NoRecipients,
    PublishError,
    PublishPending,
    PublishRefused,
)
from intelbus.kinds import Family
from intelbus.log import get_logger
from intelbus.policy.decide import decide
from intelbus.policy.redact import redact
from intelbus.policy.rules import SharingPolicy
from intelbus.records import Correction, DomainRecord, Retraction
from intelbus.transport.topics import topic_name
from producers.config import ProducerConfig
from producers.publisher import Published, Publisher, build_publisher
from producers.state import PriorSend
from web.forms import FormSpec

log = get_logger("web.publishing")

_EXTRA = "producer.desk"
_DESKS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Keeps:
    """What one recipient would keep of a record, as far as this console can tell."""

    agency: str
    #: Whether the console holds this agency's sharing policy (``[web] partner_policies``).
    held: bool
    action: str | None = None  # store, redact, withhold, quarantine (None: not held)
    rule_id: str | None = None
    redacted: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class Preview:
    """Who would receive a record, and what each keeps; or why nobody may (``refusal``)."""

    recipients: tuple[Keeps, ...]
    refusal: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What publishing one record came to: the acknowledgement, or one line why not."""

    published: Published | None
    error: str | None = None
    #: True when the record was reserved but not acknowledged: it stays pending (retry later).
    pending: bool = False


@dataclass(frozen=True, slots=True)
class Copy:
    """The console's copy of a record it published: its kind and JSON (as the model dumps it)."""

    kind: str
    data: dict[str, Any]


class Desk:
    """One producer console's publisher, its lock, and the partner policies it holds."""

    def __init__(self, config: ProducerConfig, *, publisher: Publisher | None = None) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._publisher = publisher
        self._preflighted = False

    # -- the publisher ------------------------------------------------------------------------

    def publisher(self) -> Publisher:
        """The console's publisher, built on first use (call under :attr:`lock`).

        Raises:
            IntelbusError: the key, directory, agreement or state is unusable.
        """
        with self.lock:
            if self._publisher is None:
                passphrase = None
                if self.config.passphrase_env:
                    value = os.environ.get(self.config.passphrase_env)
                    if value is None:
                        raise ConfigError(
                            f"the key's passphrase variable {self.config.passphrase_env} is unset"
                        )
                    passphrase = value.encode()
                self._publisher = build_publisher(self.config, passphrase)
            return self._publisher

    def recipient_choices(self) -> tuple[str, ...]:
        """Agencies the directory lists as able to receive (consumers and auditors, not removed):
        the choices for named recipients (``--to``)."""
        with self.lock:
            publisher = self.publisher()
            return tuple(
                sorted(
                    a.agency_id
                    for a in publisher.directory.latest.agencies
                    if (Role.CONSUMER in a.roles or Role.AUDITOR in a.roles)
                    and a.removed_at is None
                    and a.agency_id != publisher.identity.agency_id
                )
            )

    def heartbeat_stream(self) -> str:
        return topic_name(Family.HEARTBEATS, prefix=self.config.topic_prefix)

    # -- preview ------------------------------------------------------------------------------

    def preview(self, record: DomainRecord, named: Sequence[str], now: datetime) -> Preview:
        """Who would receive ``record`` and what each keeps; nothing is sealed or sent."""
        with self.lock:
            publisher = self.publisher()
            try:
                recipients = publisher.recipients_for(record, named)
            except NoRecipients as e:
                return Preview((), str(e))
        partners = self.config.web.partner_policies if self.config.web is not None else {}
        out: list[Keeps] = []
        for agency in recipients:
            path = partners.get(agency)
            if path is None:
                out.append(
                    Keeps(agency, False, note=f"decided by {agency}'s own policy; not held here")
                )
                continue
            try:
                policy = SharingPolicy.load(path)
            except ConfigError:
                out.append(Keeps(agency, False, note=f"{agency}'s policy file cannot be read here"))
                continue
            out.append(judge(agency, policy, record, now))
        return Preview(tuple(out))

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, record: DomainRecord, named: Sequence[str]) -> Outcome:  # noqa: PLR0911 - one line per failure
        """Publish ``record`` (serialised with every other publish of this console) and keep the
        console's copy of it. Expected failures come back as one line, never raised."""
        with self.lock:
            try:
                publisher = self.publisher()
                if not self._preflighted:
                    publisher.preflight()
                    self._preflighted = True
                published = publisher.publish(record, named=named)
            except NoRecipients as e:
                return Outcome(None, f"Not published, nobody may receive it: {e}")
            except PublishPending as e:
                return Outcome(None, f"Pending from earlier: {e}", pending=True)
            except PublishError as e:
                self._keep(record)
                log.warning("web.publish_pending", record_id=record.record_id)
                return Outcome(
                    None, f"Not acknowledged; it stays pending (see Pending): {e}", pending=True
                )
            except PublishRefused as e:
                return Outcome(None, f"Refused: {e}")
            except KafkaUnavailableError as e:
                self._preflighted = False
                return Outcome(None, f"The bus cannot be reached: {e}")
            except IntelbusError as e:
                return Outcome(None, f"Not published: {e}")
            self._keep(record)
        log.info(
            "web.published",
            record_id=published.record_id,
            kind=record.KIND,
            recipients=len(published.recipients),
            already=published.already,
        )
        return Outcome(published)

    def _keep(self, record: DomainRecord) -> None:
        state = self.publisher().state
        if isinstance(record, Correction):
            kept = record.replacement
            state.keep_copy(kept.record_id, kept.KIND, json.dumps(kept.model_dump(mode="json")))
        elif not isinstance(record, Retraction):
            state.keep_copy(
                record.record_id, record.KIND, json.dumps(record.model_dump(mode="json"))
            )

    def copy(self, record_id: str) -> Copy | None:
        """The console's copy of a record it published (None: it holds none)."""
        with self.lock:
            held = self.publisher().state.copy(record_id)
        if held is None:
            return None
        kind, payload = held
        data = json.loads(payload)
        return Copy(kind, data if isinstance(data, dict) else {})

    # -- what the state holds -----------------------------------------------------------------

    def sent(self, *, limit: int, offset: int) -> tuple[list[PriorSend], int]:
        """A page of what this producer reserved (newest first) and how many in all, heartbeats
        left out."""
        with self.lock:
            state = self.publisher().state
            exclude = (self.heartbeat_stream(),)
            return state.sends(limit=limit, offset=offset, exclude=exclude), state.send_count(
                exclude=exclude
            )

    def prior(self, record_id: str) -> PriorSend | None:
        with self.lock:
            return self.publisher().state.prior(record_id)

    def unsettled(self) -> list[PriorSend]:
        with self.lock:
            return self.publisher().state.unsettled()

    def retry(self) -> tuple[int, str | None]:
        """Resend every pending record byte for byte: how many were acknowledged, and one line
        if the rest could not be."""
        with self.lock:
            publisher = self.publisher()
            before = len(publisher.state.pending())
            try:
                sent = publisher.resend_pending()
            except (PublishError, KafkaUnavailableError) as e:
                left = len(publisher.state.pending())
                return before - left, f"Still not acknowledged: {e}"
        log.info("web.pending_resent", count=sent)
        return sent, None

    def abandon(self, record_id: str) -> bool:
        with self.lock:
            done = self.publisher().state.abandon(record_id)
        if done:
            log.info("web.pending_abandoned", record_id=record_id)
        return done


def desk_for(extras: dict[str, Any], config: ProducerConfig) -> Desk:
    """The console's desk (made once, kept in ``extras``)."""
    with _DESKS_LOCK:
        desk = extras.get(_EXTRA)
        if not isinstance(desk, Desk):
            desk = Desk(config)
            extras[_EXTRA] = desk
        return desk


def judge(agency: str, policy: SharingPolicy, record: DomainRecord, now: datetime) -> Keeps:
    """What ``agency``'s policy would do with ``record`` (a correction is judged as its
    replacement, as consumers do; a retraction always applies)."""
    if isinstance(record, Retraction):
        return Keeps(agency, True, "applies", None, (), "a retraction always applies")
    judged = record.replacement if isinstance(record, Correction) else record
    decision = decide(policy, judged.facts(), now)
    redacted: tuple[str, ...] = ()
    if decision.redact:
        _, redacted = redact(judged.model_dump(mode="json"), decision.redact)
    return Keeps(agency, True, decision.action.value, decision.rule_id, redacted)


def form_values(spec: FormSpec, data: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """A record's JSON as the values of its report form (the inverse of ``parse_form``)."""
    values: dict[str, tuple[str, ...]] = {}
    for f in spec.fields:
        value = _at(data, f.name.split("."))
        if value is None:
            continue
        if f.widget == "checkboxes":
            values[f.name] = tuple(str(v) for v in value) if isinstance(value, list) else ()
        elif f.widget == "lines":
            values[f.name] = ("\n".join(str(v) for v in value),) if isinstance(value, list) else ()
        elif f.widget == "datetime":
            values[f.name] = (_local(str(value)),)
        elif f.widget == "number" and isinstance(value, float) and value.is_integer():
            values[f.name] = (str(value),)
        else:
            values[f.name] = (str(value),)
    return values


def _at(data: Any, parts: list[str]) -> Any:  # noqa: ANN401 - a JSON value
    node = data
    for part in parts:
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
        if node is None:
            return None
    return node


def _local(value: str) -> str:
    """An ISO time as the ``datetime-local`` input shows it (UTC, to the second)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")
