"""factory_boy factories for the test suite."""

import factory
from django.utils import timezone

from tracking.models import Source


class SourceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Source

    name = factory.Sequence(lambda n: f"Site {n}")
    # Most tests are about collection itself; consent tests make opt-in sources explicitly.
    consent_regime = Source.ConsentRegime.OPT_OUT
    allowed_origins = factory.LazyFunction(lambda: ["https://shop.example"])


def event(event_type: str = "page_view", *, anonymous_id: str = "anon-1", n: int = 0, **extra) -> dict:
    """One event of our own API, with a unique message id by default."""
    body = {
        "type": event_type,
        "anonymous_id": anonymous_id,
        "message_id": f"{event_type}-{anonymous_id}-{n}",
        "timestamp": timezone.now().isoformat(),
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}
