"""deploy/kafka package."""
