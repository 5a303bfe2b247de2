"""Kafka plumbing: client configuration, headers, the consume loop, topic admin."""
