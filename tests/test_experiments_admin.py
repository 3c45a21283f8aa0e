"""Admin: results with verdict, warnings and the uplift chart; start/stop; the power calculator."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from experiments.models import Experiment, Exposure
from experiments.services.rollup import experiment_rollup, snapshot_take
from tests.experiments_support import experiment
from tracking.models import Event, Profile

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client.force_login(user)
    return client


def _traffic(exp, source, *, control, treatment, settings):
    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    now = timezone.now()
    variants = {v.key: v for v in exp.variants.all()}
    for key, (units, buyers) in (("control", control), ("treatment", treatment)):
        profiles = Profile.objects.bulk_create([Profile(first_seen_at=now, last_seen_at=now) for _ in range(units)])
        Exposure.objects.bulk_create(
            [
                Exposure(experiment=exp, profile=p, variant=variants[key], exposed_at=now - timedelta(days=1))
                for p in profiles
            ]
        )
        Event.objects.bulk_create(
            [
                Event(
                    source=source,
                    profile=p,
                    message_id=f"{key}-{profiles[0].pk}-{i}",
                    type="purchase",
                    timestamp=now - timedelta(hours=1),
                    received_at=now - timedelta(minutes=1),
                    value=Decimal("10"),
                )
                for i, p in enumerate(profiles[:buyers])
            ]
        )
    experiment_rollup(experiment_id=exp.pk)
    snapshot_take(experiment=exp, force=True)


def test_change_page_shows_verdict_srm_warning_and_uplift_chart(admin_client, source, settings):
    exp = experiment(source, "button", baseline=0.1, mde=0.2)
    _traffic(exp, source, control=(600, 60), treatment=(400, 80), settings=settings)
    page = admin_client.get(f"/admin/experiments/experiment/{exp.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Sample ratio mismatch" in html  # 600 vs 400 on a 50/50 split
    assert f'id="uplift-{exp.pk}"' in html and f'id="uplift-data-{exp.pk}"' in html
    assert "treatment" in html and "purchase" in html
    assert "Relative uplift of the primary metric over time" in html


def test_start_and_stop_from_the_admin(admin_client, source):
    exp = experiment(source, "button", start=False)
    admin_client.get(f"/admin/experiments/experiment/{exp.pk}/start/")
    assert Experiment.objects.get(pk=exp.pk).status == "running"
    admin_client.post(
        "/admin/experiments/experiment/", {"action": "stop_selected", "_selected_action": [exp.pk]}, follow=True
    )
    assert Experiment.objects.get(pk=exp.pk).status == "stopped"


def test_power_calculator_gives_units_per_variant_and_days(admin_client, source):
    exp = experiment(source, "button")
    page = admin_client.get(
        f"/admin/experiments/experiment/{exp.pk}/power/",
        {"baseline": "0.1", "mde": "0.1", "alpha": "0.05", "power": "0.8"},
    )
    assert page.status_code == 200
    html = page.content.decode()
    from experiments.stats import sample_size

    expected = sample_size(baseline=0.1, mde=0.1, alpha=0.05, power=0.8, variants=2)
    assert f"<b>{expected}</b> units per variant" in html
    bad = admin_client.get(f"/admin/experiments/experiment/{exp.pk}/power/", {"baseline": "2", "mde": "0.1"})
    assert "baseline" in bad.content.decode()


@pytest.mark.django_db(transaction=True)
def test_uplift_chart_draws_in_the_browser_with_its_band(browser, live_server, settings):
    from django.conf import settings as django_settings
    from django.test import Client

    from tests.browser import close_page, eventually, open_page
    from tests.factories import SourceFactory

    source = SourceFactory()
    exp = experiment(source, "button")
    _traffic(exp, source, control=(300, 30), treatment=(300, 45), settings=settings)
    _traffic(exp, source, control=(300, 30), treatment=(300, 50), settings=settings)
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client = Client()
    client.force_login(user)
    page = open_page(browser)
    try:
        page.context.add_cookies(
            [
                {
                    "name": django_settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        page.goto(f"{live_server.url}/admin/experiments/experiment/{exp.pk}/change/")
        drawn = eventually(
            page,
            lambda: page.evaluate(
                f"() => {{ const c = window.Chart && Chart.getChart(document.getElementById('uplift-{exp.pk}'));"
                " return c ? c.data.datasets.map(d => [d.label, d.data.length]) : null; }"
            ),
            what="the uplift chart",
        )
        assert ["treatment uplift %", 2] in drawn and ["treatment upper", 2] in drawn
        page.screenshot(path="/tmp/experiments_admin.png", full_page=True)
    finally:
        close_page(page)


def test_demo_experiment_seed_assigns_the_demo_visitors_and_has_results(settings):
    from io import StringIO

    from django.core.management import call_command

    from experiments.models import VariantMetricStats

    settings.EXPERIMENTS_ROLLUP_LAG_SECONDS = 0
    out = StringIO()
    call_command("seed_demo", visitors=30, stdout=out)  # seeds the demo experiment too
    assert "30 visitors assigned" in out.getvalue()
    exp = Experiment.objects.get(key="demo-checkout-button")
    assert exp.status == "running" and Exposure.objects.filter(experiment=exp).count() == 30
    primary = VariantMetricStats.objects.filter(experiment=exp, metric=exp.primary_metric)
    assert sum(row.n for row in primary) == 30
    again = StringIO()
    call_command("experiments_seed", stdout=again)
    assert "exists already" in again.getvalue() and Exposure.objects.filter(experiment=exp).count() == 30


def test_admin_refuses_two_controls_and_bad_targeting(admin_client, source):
    from experiments.models import Metric

    metric = Metric.objects.create(source=source, key="purchase", event_types=["purchase"])
    form = {
        "source": source.pk,
        "key": "from-admin",
        "name": "From the admin",
        "kind": "ab",
        "traffic": "1.0",
        "targeting": '{"weather": ["sunny"]}',
        "primary_metric": metric.pk,
        "cuped_days": "14",
        "alpha": "0.05",
        "power": "0.8",
        "salt": "abc",
        "variants-TOTAL_FORMS": "2",
        "variants-INITIAL_FORMS": "0",
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
    }
    for i, key in enumerate(["a", "b"]):
        form.update(
            {
                f"variants-{i}-key": key,
                f"variants-{i}-weight": "1",
                f"variants-{i}-is_control": "on",
                f"variants-{i}-payload": "{}",
                f"variants-{i}-factors": "{}",
                f"variants-{i}-position": str(i),
            }
        )
    page = admin_client.post("/admin/experiments/experiment/add/", form)
    assert page.status_code == 200  # the form again, with the errors
    html = page.content.decode()
    assert "Exactly one variant must be the control." in html and "weather" in html
    form["targeting"] = '{"device_type": ["mobile"]}'
    del form["variants-1-is_control"]
    saved = admin_client.post("/admin/experiments/experiment/add/", form)
    assert saved.status_code == 302
    assert Experiment.objects.get(key="from-admin").variants.get(is_control=True).key == "a"
