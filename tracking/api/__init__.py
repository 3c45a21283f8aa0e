"""HTTP API of event collection."""
