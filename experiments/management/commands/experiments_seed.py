"""Demo experiment on the demo storefront, with results (run after `seed_demo`; idempotent)."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from experiments.models import Experiment, Metric
from experiments.services.assignment import assignments_for, exposures_log
from experiments.services.experiments import VariantIn, experiment_save, experiment_start, metric_create
from experiments.services.rollup import experiment_recompute, snapshot_take
from tracking.models import Profile, Source

DEMO_SOURCE = "Demo storefront"
KEY = "demo-checkout-button"


class Command(BaseCommand):
    help = "Create and start a demo A/B test on the demo storefront, assign its visitors and compute its results."

    def handle(self, *args, **options):
        source = Source.objects.filter(name=DEMO_SOURCE).first()
        if source is None:
            raise CommandError(f"no source {DEMO_SOURCE!r}: run `manage.py seed_demo` first")
        if Experiment.objects.filter(source=source, key=KEY).exists():
            self.stdout.write(f"Demo experiment {KEY!r} exists already.")
            return
        with transaction.atomic():
            for key, kind, types in (
                ("purchase", Metric.Kind.CONVERSION, ["purchase"]),
                ("revenue", Metric.Kind.REVENUE, ["purchase"]),
                ("add_to_cart", Metric.Kind.COUNT, ["add_to_cart"]),
                ("product_views", Metric.Kind.COUNT, ["product_view"]),
            ):
                if not Metric.objects.filter(source=source, key=key).exists():
                    metric_create(source=source, key=key, kind=kind, event_types=types, window_days=30)
            experiment = experiment_save(
                source=source,
                experiment=None,
                data={
                    "key": KEY,
                    "name": "Checkout button wording",
                    "hypothesis": "'Add to basket' converts better than 'Buy now'.",
                    "primary_metric": "purchase",
                    "secondary_metrics": ["revenue", "add_to_cart"],
                    "guardrail_metrics": ["product_views"],
                    "baseline": 0.05,
                    "mde": 0.2,
                },
                variants=[
                    VariantIn("buy-now", name="Buy now", is_control=True, payload={"cta": "Buy now"}),
                    VariantIn("add-to-basket", name="Add to basket", payload={"cta": "Add to basket"}),
                ],
            )
            experiment_start(experiment=experiment)
        assigned = 0
        for profile in Profile.objects.filter(last_source=source).order_by("id"):
            got = assignments_for(source=source, profile=profile, expose=False, only=lambda spec: spec.key == KEY)
            if got:
                # The demo's journeys happened before the experiment: date its exposures back to each
                # visitor's first visit so that their events count, as if it had run all along.
                exposures_log(
                    profile_id=profile.pk, pairs=[(got[0].experiment.id, got[0].variant.id)], at=profile.first_seen_at
                )
                assigned += 1
        experiment_recompute(experiment_id=experiment.pk)
        snapshot_take(experiment=experiment, force=True)
        self.stdout.write(f"Demo experiment {KEY!r}: {assigned} visitors assigned; results in the admin.")
