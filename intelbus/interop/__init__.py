"""Interoperability: the bus's records as other tools read them (STIX 2.1, TAXII 2.1, MISP).

Nothing here is trusted input to the bus: exports are built from a force's store, and imports
(``publish --format stix|misp``) become ordinary producer input, validated like a CSV row.
"""
