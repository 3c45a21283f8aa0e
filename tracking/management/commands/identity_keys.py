"""Show which keys the stored identifier hashes were made with: how far a key rotation has got."""

from django.core.management.base import BaseCommand
from django.db.models import Count

from tracking.models import Identity
from tracking.services.identity import identity_hash_key, key_fingerprint, old_identity_hash_keys


class Command(BaseCommand):
    help = "Count hashed identities (user ids, emails, phones) per hash key, current and old."

    def handle(self, *args, **options):
        names = {key_fingerprint(identity_hash_key()): "current (IDENTITY_HASH_KEY)"}
        for index, key in enumerate(old_identity_hash_keys(), start=1):
            names.setdefault(key_fingerprint(key), f"old #{index} (IDENTITY_HASH_OLD_KEYS)")
        counts = (
            Identity.objects.exclude(kind=Identity.Kind.ANONYMOUS)
            .values_list("key_id")
            .annotate(n=Count("id"))
            .order_by("-n")
        )
        rows = list(counts)
        if not rows:
            self.stdout.write("No hashed identities yet.")
        for key_id, n in rows:
            self.stdout.write(f"{key_id or '(unknown)':10} {n:>10,}  {names.get(key_id, 'not configured')}")
        stale = sum(n for key_id, n in rows if names.get(key_id, "").startswith("old"))
        if old_identity_hash_keys():
            self.stdout.write(f"{stale:,} identities still hashed with old keys (they move on the user's next event).")
