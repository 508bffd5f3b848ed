"""The Kafka service: consumer loop, batching, dead-letter, metrics/health HTTP, signal handling."""
