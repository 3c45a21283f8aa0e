"""The admin's home page: what is arriving, at a glance (unfold dashboard callback)."""

import json

from django.utils.formats import number_format

from tracking.selectors import collection_overview


def dashboard_callback(request, context: dict) -> dict:
    overview = collection_overview()
    context.update(
        {
            "kpis": [
                {"title": "Events, last 24 h", "value": number_format(overview["events_24h"], force_grouping=True)},
                {"title": "Profiles", "value": number_format(overview["profiles"], force_grouping=True)},
                {
                    "title": "Active profiles, 7 days",
                    "value": number_format(overview["active_profiles_7d"], force_grouping=True),
                },
                {
                    "title": "Refused events, 7 days",
                    "value": number_format(overview["refused_7d"], force_grouping=True),
                },
            ],
            "events_chart": json.dumps(
                {
                    "labels": [day.strftime("%d %b") for day in overview["days"]],
                    "datasets": [{"label": "Events", "data": overview["events_per_day"]}],
                }
            ),
            "top_types": {
                "headers": ["Event type", "Events (7 days)"],
                "rows": [[name, number_format(count, force_grouping=True)] for name, count in overview["top_types_7d"]],
            },
        }
    )
    return context
