"""hl7bus operations: CLI, config, Kafka clients, local broker, metrics."""
