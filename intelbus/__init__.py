"""intelbus: a secure inter-agency intelligence-sharing message bus over Apache Kafka.

The core package. It owns the wire contract (schemas, envelope, keys), the trust decisions,
storage and transport adapters. It never imports ``producers``, ``consumers`` or ``deploy``
(only ``intelbus.cli`` wires them together).
"""

from intelbus.errors import InfraError, IntelbusError, ReasonCode, RecordError

__all__ = ["InfraError", "IntelbusError", "ReasonCode", "RecordError", "__version__"]

__version__ = "0.1.0"
