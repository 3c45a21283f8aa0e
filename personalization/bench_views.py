"""The ingestion benchmark's floor: the same stack (DRF view, key look-up, body parsing) storing nothing.

Mounted only when BENCH_FLOOR_ENABLED is set; never in production.
"""

from rest_framework.response import Response

from tracking.api.collect import CollectView


class FloorView(CollectView):
    schema = None

    def post(self, request):
        self.credential(request, self.body(request))
        return Response(status=204)
