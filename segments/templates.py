"""Built-in segment templates: a marketer adds one with one click and edits it like any segment.

TEMPLATES maps a template key to (name, description, rule). The rules are ordinary rule trees
(documented in the README); "At-risk churners" reads the churn-risk score the ML models store.
"""

TEMPLATES: dict[str, tuple[str, str, dict]] = {
    "new_visitors": (
        "New visitors",
        "First seen in the last 7 days.",
        {"kind": "profile", "field": "days_since_first_visit", "op": "lt", "value": 7},
    ),
    "returning_visitors": (
        "Returning visitors",
        "Came back: at least 2 sessions, and seen in the last 30 days.",
        {
            "all": [
                {"kind": "profile", "field": "session_count", "op": "gte", "value": 2},
                {"kind": "profile", "field": "days_since_last_visit", "op": "lt", "value": 30},
            ]
        },
    ),
    "high_engagement": (
        "High engagement",
        "At least 20 events and 5 product views in the last 30 days.",
        {
            "all": [
                {"kind": "event", "event": "*", "measure": "count", "within": 30, "op": "gte", "value": 20},
                {"kind": "event", "event": "product_view", "measure": "count", "within": 30, "op": "gte", "value": 5},
            ]
        },
    ),
    "cart_abandoners": (
        "Cart abandoners",
        "Added to cart in the last 7 days and bought nothing in that time.",
        {
            "all": [
                {"kind": "event", "event": "add_to_cart", "measure": "count", "within": 7, "op": "gte", "value": 1},
                {"kind": "event", "event": "purchase", "measure": "count", "within": 7, "op": "eq", "value": 0},
            ]
        },
    ),
    "high_value_buyers": (
        "High-value buyers",
        "Spent 500 or more in total (sum of purchase values, ever).",
        {"kind": "event", "event": "purchase", "measure": "sum", "op": "gte", "value": 500},
    ),
    "at_risk_churners": (
        "At-risk churners",
        "Customers (one purchase or more) whose churn-risk score is 0.7 or higher.",
        {
            "all": [
                {"kind": "event", "event": "purchase", "measure": "count", "op": "gte", "value": 1},
                {"kind": "score", "name": "churn_risk", "op": "gte", "value": 0.7},
            ]
        },
    ),
    "dormant": (
        "Dormant",
        "Not seen for more than 30 days.",
        {"kind": "profile", "field": "days_since_last_visit", "op": "gt", "value": 30},
    ),
}
