"""Serialization: the schema registry, the Avro codec, and schema rules (lint, compatibility).

``avro`` is the only importer of fastavro. It decodes only authenticated bytes (the envelope's
signature has been verified before), and even then under a size cap and with every decoder
failure mapped to :class:`~intelbus.errors.SchemaViolation`.
"""
