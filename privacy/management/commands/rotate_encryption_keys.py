"""Re-encrypt every stored encrypted trait with the newest key of FIELD_ENCRYPTION_KEYS."""

from django.core.management.base import BaseCommand

from privacy.services import encryption_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt all encrypted traits with the first key of FIELD_ENCRYPTION_KEYS. Procedure: put a new key "
        "first (keep the old ones after it), restart, run this command, then remove the old keys."
    )

    def handle(self, *args, **options):
        self.stdout.write(f"Re-encrypted {encryption_keys_rotate():,} traits with the newest key.")
