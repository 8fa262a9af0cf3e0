"""Consumers: verify, decrypt, apply an agency's sharing policy and store records; auditor replay.

Imports the core, never producers.
"""
