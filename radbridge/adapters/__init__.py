"""Adapters: the outside systems (HL7 v2, FHIR, Kafka, model servers) behind the ports of radbridge.ports."""
