"""Producers: validate, encode, seal and publish records to the bus. Imports the core, never consumers."""
