"""Training API: queue a training on demand, and read the versions of a configuration."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from recommenders.models import ModelVersion
from recommenders.selectors import config_get, model_versions
from recommenders.services.configs import config_default_ensure
from recommenders.services.training import training_enqueue
from tracking.api.collect import ErrorSerializer


class TrainSerializer(serializers.Serializer):
    config = serializers.SlugField(
        required=False, help_text="Key of the configuration to train (default: the default configuration)."
    )
    force = serializers.BooleanField(
        default=False, help_text="Train even if no event came since the last version (re-evaluates it)."
    )


class TrainQueuedSerializer(serializers.Serializer):
    queued = serializers.BooleanField()
    config = serializers.CharField()


class ModelVersionSerializer(serializers.ModelSerializer):
    config = serializers.CharField(source="config.key")

    class Meta:
        model = ModelVersion
        fields = [
            "config",
            "version",
            "status",
            "reason",
            "algorithm",
            "trained_at",
            "trained_through",
            "published_at",
            "params",
            "metrics",
            "matrix_stats",
            "timings",
            "health",
        ]


class TrainView(APIView):
    """On-demand training (secret key)."""

    @extend_schema(
        summary="Train a recommender now",
        description=(
            "Queues the pipeline (extract, build matrix, fit, evaluate, register, promote, publish) for a "
            "configuration. Idempotent: with no new events since the last version it does nothing (unless "
            "`force`), and a training already running for the configuration is not started twice."
        ),
        request=TrainSerializer,
        responses={
            202: TrainQueuedSerializer,
            400: ErrorSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No configuration with that key."),
        },
    )
    def post(self, request):
        body = TrainSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = body.validated_data.get("config")
        config = config_get(key=key) if key else config_default_ensure()
        if config is None:
            raise NotFound(f"config: no recommender configuration {key!r}")
        training_enqueue(config=config, force=body.validated_data["force"])
        return Response({"queued": True, "config": config.key}, status=202)


class ModelVersionsView(generics.ListAPIView):
    """Trained versions, newest first, with their metrics next to the popularity baseline."""

    serializer_class = ModelVersionSerializer

    @extend_schema(
        summary="List model versions",
        parameters=[OpenApiParameter("config", str, description="Only versions of this configuration (key).")],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        key = self.request.query_params.get("config")
        if key:
            config = config_get(key=key)
            if config is None:
                raise NotFound(f"config: no recommender configuration {key!r}")
            return model_versions(config=config)
        return model_versions()
