"""Transport: topic names and settings, and the one adapter around kafka-python."""
