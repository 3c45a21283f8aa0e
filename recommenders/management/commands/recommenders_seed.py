"""Demo catalogue and a trained default recommender (run after `seed_demo`; idempotent)."""

from django.core.management.base import BaseCommand

from recommenders.services.catalogue import items_upsert
from recommenders.services.configs import config_default_ensure
from recommenders.services.training import model_train
from tracking.demo import CATEGORIES, catalogue


class Command(BaseCommand):
    help = "Upsert the demo catalogue (sku-001 ...) and train the default recommender once (no-op when up to date)."

    def add_arguments(self, parser):
        parser.add_argument("--no-train", action="store_true", help="Only the catalogue")

    def handle(self, *args, no_train: bool, **options):
        items = []
        for product in catalogue():
            name, _, colour = product.name.partition(" (")
            items.append(
                {
                    "external_id": product.item_id,
                    "title": product.name,
                    "description": f"{name} in {colour.rstrip(')')}, from our {product.category} range.",
                    "categories": [product.category],
                    "tags": [colour.rstrip(")")],
                    "price": f"{product.price:.2f}",
                    "in_stock": True,
                }
            )
        result = items_upsert(items=items)
        self.stdout.write(
            f"Demo catalogue: {result.created} items created, {result.updated} updated ({len(CATEGORIES)} categories)."
        )
        if no_train:
            return
        config = config_default_ensure()
        outcome = model_train(config_id=config.pk)
        version = f"v{outcome.version}" if outcome.version else "no version"
        self.stdout.write(f"Recommender {config.key!r}: {version} {outcome.status} - {outcome.reason}")
