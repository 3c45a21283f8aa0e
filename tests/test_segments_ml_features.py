"""Property: the churn features the database computes (one aggregate query) equal the numpy reference
definition on the same events, for random event logs, window edges and day boundaries included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.ml.churn import churn_features, churn_matrix
from segments.services.scores import churn_columns
from tests.factories import SourceFactory
from tracking.models import Event, Profile

CUTOFF = datetime(2026, 6, 1, tzinfo=UTC)
TYPES = ["page_view", "product_view", "add_to_cart", "purchase", "signup"]

# (profile 0-3, hours before the cutoff (negative: after it), type, purchase value in cents)
events_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.one_of(st.integers(-24 * 40, 24 * 200), st.sampled_from([0, 1, 24 * 7, 24 * 30, 24 * 90, -24 * 30])),
        st.sampled_from(TYPES),
        st.integers(0, 50_000),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_strategy)
def test_database_churn_features_equal_the_reference_on_random_logs(events):
    sid = transaction.savepoint()
    try:
        source = SourceFactory()
        profiles = [Profile.objects.create(first_seen_at=CUTOFF, last_seen_at=CUTOFF) for _ in range(4)]
        rows = []
        for n, (who, hours, kind, cents) in enumerate(events):
            when = CUTOFF - timedelta(hours=hours)
            value = Decimal(cents) / 100 if kind == "purchase" else None
            rows.append(
                Event(
                    source=source,
                    profile=profiles[who],
                    message_id=f"m{n}",
                    type=kind,
                    timestamp=when,
                    received_at=when,
                    value=value,
                )
            )
        Event.objects.bulk_create(rows)

        ids, columns, labels = churn_columns(cutoff=CUTOFF, horizon_days=30)
        stamps = np.array([r.timestamp.timestamp() for r in rows])
        expected_ids, expected = churn_features(
            np.array([r.profile_id for r in rows]),
            stamps,
            np.array([r.type for r in rows]),
            np.array([np.nan if r.value is None else float(r.value) for r in rows]),
            cutoff=CUTOFF.timestamp(),
        )
        assert list(ids) == list(expected_ids)
        if len(ids):
            assert np.allclose(churn_matrix(columns), expected)
        later = {r.profile_id for r in rows if CUTOFF <= r.timestamp < CUTOFF + timedelta(days=30)}
        assert labels.tolist() == [int(pk not in later) for pk in ids]
    finally:
        transaction.savepoint_rollback(sid)
