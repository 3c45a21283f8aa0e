"""Privacy: consent, pseudonymization, PII masking, encryption at rest and data-subject requests."""
