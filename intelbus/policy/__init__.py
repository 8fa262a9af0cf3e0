"""Sharing decisions, both sides of the bus.

* ``agreement``: the producer's sharing agreement decides *who receives* a record (its recipients).
* ``rules`` and ``decide``: each consumer's sharing policy decides *what it keeps* of what it
  received: store, store redacted, withhold (a receipt only) or quarantine.
* ``retention``: how long each consumer keeps a stored payload, and when a person must review it
  (the ``[retention]`` section of its sharing policy).
* ``facts``: the few graded facts of a record both look at, so neither depends on the full models.

Everything here is pure (no I/O) and fails closed: an empty policy stores nothing, a record whose
recipients cannot be determined is not published.
"""
