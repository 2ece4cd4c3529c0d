"""Reporting: message schemas, the durable outbox and the MQTT transports."""
