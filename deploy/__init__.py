"""Deployment: fetching and running Apache Kafka locally, and (later) certificates and ACLs."""
