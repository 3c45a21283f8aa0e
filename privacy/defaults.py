"""The purposes every installation starts with, and the consent categories consent tools send."""

PURPOSES = [
    # key, name, description, legal basis, required, position
    ("necessary", "Necessary", "What the site needs to work and to record your choices.", "legal_obligation", True, 0),
    ("analytics", "Analytics", "Measuring how the site is used, to improve it.", "consent", False, 1),
    ("personalization", "Personalization", "Recommendations and content chosen for you.", "consent", False, 2),
    (
        "marketing",
        "Marketing",
        "Advertising and marketing messages, including sharing with partners.",
        "consent",
        False,
        3,
    ),
]
CATEGORIES = {
    "necessary": "necessary",
    "functional": "personalization",
    "personalization": "personalization",
    "analytics": "analytics",
    "performance": "analytics",
    "advertising": "marketing",
    "marketing": "marketing",
    "targeting": "marketing",
}


def purposes_seed(purpose_model, mapping_model) -> None:
    """Create the default purposes and categories that are missing (models passed in, so migrations
    can use their historical ones)."""
    by_key = {}
    for key, name, description, basis, required, position in PURPOSES:
        by_key[key], _ = purpose_model.objects.get_or_create(
            key=key,
            defaults={
                "name": name,
                "description": description,
                "legal_basis": basis,
                "required": required,
                "position": position,
            },
        )
    for category, key in CATEGORIES.items():
        mapping_model.objects.get_or_create(category=category, defaults={"purpose": by_key[key]})
