"""Models of the recommenders app."""
