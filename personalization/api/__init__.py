"""API plumbing shared by every app: key authentication, errors, pagination, CORS, body reading."""
