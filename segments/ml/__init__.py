"""Pure ML of the segments app (numpy + scikit-learn, no Django): RFM clusters and churn risk.

Django code (``segments/services/scores.py``) extracts the features from the tracking tables, calls
these functions, and stores what they return; everything here is seeded, so a rerun on the same
data gives the same clusters, names and scores.
"""
