"""Services (writes and business rules) of the recommenders app, one module per concept."""
