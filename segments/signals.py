"""Internal events of segments, for triggers and webhooks.

`membership_changed` is sent after the transaction that recorded the change commits, once per
profile and segment, with ``segment_id``, ``profile_id`` and ``kind`` ("entered" or "left") and
``via`` ("realtime" or "batch"). The batch path sends it only for the entrants and leavers of a
recompute, so a receiver sees every change exactly once.
"""

from django.dispatch import Signal

membership_changed = Signal()
