"""Writes and business rules of event collection."""
