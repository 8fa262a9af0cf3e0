"""Trust decisions, made in one place for consumers and auditors alike.

* ``intake``: from raw Kafka bytes to a :class:`~intelbus.trust.model.Prepared` record: size cap,
  broker time, envelope verification against the directory, and (for a recipient) opening and
  decoding. Heavy on cryptography, free of I/O, safe to run in worker threads.
* ``judge``: the one judge. A pure function of a prepared record and a
  :class:`~intelbus.trust.model.Snapshot` of trusted state (stream heads, the record ids already
  held and by whom, amendments waiting for their target): binding, chain, identity, amendments
  and the sharing policy, returning a :class:`~intelbus.trust.model.Verdict`.
* ``versions``: a record's current state as the fold of its versions (original, corrections,
  retractions, withdrawals).
* ``rejudge``: what a new directory version withdraws (keys revoked or compromised since a time).
* ``model``: the frozen values that cross these boundaries, and the :class:`Batch` a store persists.

Nothing here performs I/O: the consumer loop and the auditor read and write; the store persists.
"""
