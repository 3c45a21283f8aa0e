"""PII never reaches the database: masking at ingest, the source's denylist, hashed identifiers."""

import pytest
from django.apps import apps
from django.db import connection

from tests.factories import event
from tracking.models import Event, Identity, Profile

pytestmark = pytest.mark.django_db

EMAIL = "ann.smith@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
IP = "203.0.113.77"
USER_ID = "crm-customer-880417"
SECRET = "hunter2-correct-horse"


def test_pii_in_properties_traits_and_page_is_masked_before_storage(client_public, source):
    source.pii_denylist = ["password"]
    source.save()
    body = event(
        "checkout",
        user_id=USER_ID,
        properties={
            "order_id": "o-1001",
            "revenue": 59.9,
            "notes": f"call me on {PHONE} or mail {EMAIL}, card {CARD}",
            "from_ip": IP,
            "password": SECRET,
            "items": [{"sku": "sku-000123", "price": 19.99}],
        },
        traits={"email": EMAIL, "plan": "plus", "nickname": f"ann ({EMAIL})"},
        context={"page": {"url": f"https://shop.example/thanks?email={EMAIL.replace('@', '%40')}&utm_medium=email"}},
    )
    response = client_public.post("/api/v1/events", {"events": [body]}, format="json")
    assert response.status_code == 200, response.json()

    stored = Event.objects.get()
    assert stored.properties["notes"] == "call me on [phone] or mail [email], card [card]"
    assert stored.properties["from_ip"] == "[ip]"
    assert stored.properties["password"] == "[redacted]"
    assert stored.properties["items"] == [{"sku": "sku-000123", "price": 19.99}]
    assert "[email]" in stored.context["page"]["url"]
    assert stored.traffic_source == "email"  # enrichment still sees the campaign
    profile = Profile.objects.get()
    assert profile.traits == {"plan": "plus", "nickname": "ann ([email])"}
    assert Identity.objects.filter(profile=profile, kind="email").exists()  # linked, as a keyed hash


def test_no_raw_identifier_or_pii_in_any_table(client_public):
    client_public.post(
        "/api/v1/events",
        {
            "events": [
                event("identify", user_id=USER_ID, traits={"email": EMAIL, "phone": PHONE}),
                event("purchase", n=2, user_id=USER_ID, properties={"card": CARD, "ip": IP, "email": EMAIL}),
            ]
        },
        format="json",
    )
    needles = [USER_ID, EMAIL, PHONE, CARD, IP, CARD.replace(" ", "")]
    with connection.cursor() as cursor:
        for model in [*apps.get_app_config("tracking").get_models(), *apps.get_app_config("privacy").get_models()]:
            table = model._meta.db_table
            for needle in needles:
                cursor.execute(f"SELECT count(*) FROM {table} t WHERE t::text ILIKE %s", [f"%{needle}%"])
                assert cursor.fetchone()[0] == 0, (table, needle)


def test_national_phone_numbers_are_masked_for_the_sources_region(client_public, source):
    source.phone_region = "FR"
    source.save()
    body = event("contact_form", properties={"message": "rappelez-moi au 06 12 34 56 78 svp", "zip": "75011"})
    client_public.post("/api/v1/events", {"events": [body]}, format="json")
    assert Event.objects.get().properties == {"message": "rappelez-moi au [phone] svp", "zip": "75011"}


def test_an_unknown_region_is_refused_in_the_admin_and_ignored_by_ingestion(client_public, source):
    from django.core.exceptions import ValidationError

    source.phone_region = "ZZ"
    with pytest.raises(ValidationError, match="phone_region"):
        source.full_clean()
    source.save()  # stored anyway (e.g. by a script): collection must keep working
    body = event("page_view", properties={"tel": "+33 6 12 34 56 78"})
    assert client_public.post("/api/v1/events", {"events": [body]}, format="json").status_code == 200
    assert Event.objects.get().properties == {"tel": "[phone]"}


def test_phone_number_trait_links_devices_as_one_identity_never_stored_in_clear(client_public, source):
    source.phone_region = "FR"
    source.save()
    client_public.post(
        "/api/v1/events",
        {"events": [event("identify", anonymous_id="phone-app", n=1, traits={"phone": "+33 6 12 34 56 78"})]},
        format="json",
    )
    client_public.post(
        "/api/v1/events",
        {"events": [event("identify", anonymous_id="laptop", n=2, traits={"phone": "06 12 34 56 78", "plan": "x"})]},
        format="json",
    )
    profile = Profile.objects.get()
    assert sorted(profile.identities.values_list("kind", flat=True)) == ["anonymous", "anonymous", "phone"]
    assert profile.traits == {"plan": "x"}
    with connection.cursor() as cursor:
        for table in ("tracking_event", "tracking_identity", "tracking_profile"):
            for needle in ("612345678", "12 34 56 78"):
                cursor.execute(f"SELECT count(*) FROM {table} t WHERE t::text LIKE %s", [f"%{needle}%"])
                assert cursor.fetchone()[0] == 0, (table, needle)


def test_admin_finds_a_profile_by_phone_number(admin_client, client_public):
    client_public.post(
        "/api/v1/events",
        {"events": [event("identify", anonymous_id="p1", traits={"phone": "+44 20 7946 0958"})]},
        format="json",
    )
    profile = Profile.objects.get()
    page = admin_client.get("/admin/tracking/profile/", {"q": "+442079460958"}).content.decode()
    assert str(profile.uuid) in page
