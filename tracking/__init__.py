"""Event collection: sources and keys, snippet and pixel, ingestion, profiles and identity."""
