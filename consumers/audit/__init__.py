"""Auditor replay: verify a topic's whole history with public keys only (docs/audit.md).

* ``findings``: one frozen :class:`Finding` per problem, with its stable reason code.
* ``digest``: an order-independent, bounded-memory digest of what a replay saw.
* ``keycache``: signing-key resolution cached per key and directory interval (exact).
* ``state``: the fixed-size state a replay carries (chain heads, counters, digest).
* ``replay``: the engine: verify in a thread pool, judge chains in order on one thread.
* ``source``: where records come from (Kafka without a group, or memory for tests).
* ``checkpoint``: resume a replay where it stopped, with the same final result.
* ``report``: the JSON report (findings streamed) and the human summary.
"""
