"""Experiments API: the visitor's assignments and exposures (public key), experiments and metrics (secret key)."""

from __future__ import annotations

from django.db import transaction
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.api.serializers import (
    AssignmentsOutSerializer,
    ExperimentSerializer,
    ExperimentWriteSerializer,
    ExposureInSerializer,
    ExposureOutSerializer,
    MetricSerializer,
    ResultsSerializer,
)
from experiments.models import Experiment, Metric
from experiments.selectors import experiment_get, experiment_list, experiment_results, snapshot_history
from experiments.services.assignment import Context, visitor_assignments
from experiments.services.experiments import (
    ExperimentError,
    VariantIn,
    experiment_delete,
    experiment_pause,
    experiment_save,
    experiment_start,
    experiment_stop,
    metric_create,
)
from experiments.services.rollup import experiment_catch_up
from personalization.api.auth import HasSourceKey, SecretKeyAuthentication, WriteKeyAuthentication
from personalization.api.errors import BadRequest, error_response


def _error(exc: ExperimentError) -> Response:
    message = f"{exc.field}: {exc.message}" if exc.field else exc.message
    return error_response(exc.status, exc.code, message, field=exc.field)


def _variants(data: dict) -> list[VariantIn] | None:
    if "variants" not in data:
        return None
    return [VariantIn(**dict(v)) for v in data.pop("variants")]


class ExperimentListView(generics.ListAPIView):
    serializer_class = ExperimentSerializer

    def get_queryset(self):
        return experiment_list(source_id=self.request.auth.source.pk)

    @extend_schema(tags=["experiments"], summary="List the source's experiments, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["experiments"],
        summary="Create an experiment (a draft) with its variants and metrics",
        request=ExperimentWriteSerializer,
        responses={201: ExperimentSerializer},
    )
    def post(self, request):
        serializer = ExperimentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            experiment = experiment_save(
                source=request.auth.source, experiment=None, data=data, variants=_variants(data) or []
            )
        except ExperimentError as exc:
            return _error(exc)
        return Response(
            ExperimentSerializer(experiment_get(source_id=request.auth.source.pk, key=experiment.key)).data, status=201
        )


class ExperimentDetailView(APIView):
    def _get(self, request, key: str) -> Experiment:
        experiment = experiment_get(source_id=request.auth.source.pk, key=key)
        if experiment is None:
            raise Http404(f"no experiment {key!r} in this source")
        return experiment

    @extend_schema(tags=["experiments"], summary="One experiment", responses=ExperimentSerializer)
    def get(self, request, key: str):
        return Response(ExperimentSerializer(self._get(request, key)).data)

    @extend_schema(
        tags=["experiments"],
        summary="Change an experiment (once started: weights, traffic, payloads, targeting, metrics; new units only)",
        request=ExperimentWriteSerializer,
        responses=ExperimentSerializer,
    )
    def patch(self, request, key: str):
        experiment = self._get(request, key)
        serializer = ExperimentWriteSerializer(experiment, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        try:
            with transaction.atomic():
                experiment_save(source=request.auth.source, experiment=experiment, data=data, variants=_variants(data))
        except ExperimentError as exc:
            return _error(exc)
        return Response(ExperimentSerializer(self._get(request, experiment.key)).data)

    @extend_schema(tags=["experiments"], summary="Delete a draft", responses={204: None})
    def delete(self, request, key: str):
        try:
            experiment_delete(experiment=self._get(request, key))
        except ExperimentError as exc:
            return _error(exc)
        return Response(status=204)


class ExperimentActionView(APIView):
    action = ""
    services = {"start": experiment_start, "pause": experiment_pause, "stop": experiment_stop}

    @extend_schema(tags=["experiments"], request=None, responses=ExperimentSerializer)
    def post(self, request, key: str):
        experiment = experiment_get(source_id=request.auth.source.pk, key=key)
        if experiment is None:
            raise Http404(f"no experiment {key!r} in this source")
        try:
            self.services[self.action](experiment=experiment)
        except ExperimentError as exc:
            return _error(exc)
        return Response(ExperimentSerializer(experiment_get(source_id=request.auth.source.pk, key=key)).data)


def action_view(name: str, summary: str):
    view = type(
        f"Experiment{name.title()}View",
        (ExperimentActionView,),
        {"action": name, "post": extend_schema(summary=summary)(ExperimentActionView.post)},
    )
    return view.as_view()


class ExperimentResultsView(APIView):
    @extend_schema(
        tags=["experiments"],
        summary="Results: every variant against control on every metric, SRM, guardrails, verdict",
        parameters=[OpenApiParameter("history", bool, description="Include the snapshots behind the uplift chart.")],
        responses=ResultsSerializer,
    )
    def get(self, request, key: str):
        experiment = experiment_get(source_id=request.auth.source.pk, key=key)
        if experiment is None:
            raise Http404(f"no experiment {key!r} in this source")
        experiment_catch_up(experiment=experiment)
        results = experiment_results(experiment=experiment)
        if request.query_params.get("history") in ("1", "true"):
            results["history"] = [
                {"taken_at": s.taken_at.isoformat(), "results": s.results}
                for s in snapshot_history(experiment_id=experiment.pk)
            ]
        return Response(results)


class MetricListView(generics.ListAPIView):
    serializer_class = MetricSerializer

    def get_queryset(self):
        return Metric.objects.filter(source=self.request.auth.source)

    @extend_schema(tags=["experiments"], summary="List the source's experiment metrics")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=["experiments"], summary="Define a metric", request=MetricSerializer, responses={201: MetricSerializer}
    )
    def post(self, request):
        serializer = MetricSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            metric = metric_create(source=request.auth.source, **serializer.validated_data)
        except ExperimentError as exc:
            return _error(exc)
        return Response(MetricSerializer(metric).data, status=201)


def _context(request) -> Context:
    params = request.query_params
    return Context(
        device_type=params.get("device_type", "").strip()[:16],
        country=params.get("country", "").strip()[:2],
        traffic_source=params.get("traffic_source", "").strip()[:16],
        gpc=request.META.get("HTTP_SEC_GPC", "").strip() == "1",
    )


def _anonymous_id(value) -> str:
    anonymous_id = (value or "").strip()
    if not anonymous_id:
        raise BadRequest("anonymous_id: query parameter is required")
    if len(anonymous_id) > 128:
        raise BadRequest("anonymous_id: at most 128 characters")
    return anonymous_id


class AssignmentsView(APIView):
    """The visitor's own variants: public write key (or secret key) and the visitor's anonymous id."""

    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes = [HasSourceKey]

    @extend_schema(
        tags=["experiments"],
        summary="The visitor's variant in every running experiment they qualify for (logs exposure once)",
        parameters=[
            OpenApiParameter("anonymous_id", str, required=True),
            OpenApiParameter("expose", bool, description="Log exposure now (default true); false: log it later."),
            OpenApiParameter("device_type", str, description="Context for targeting (default: last seen)."),
            OpenApiParameter("country", str, description="ISO country for targeting (default: last seen)."),
            OpenApiParameter("traffic_source", str, description="Traffic source for targeting (default: last seen)."),
        ],
        responses=AssignmentsOutSerializer,
    )
    def get(self, request):
        anonymous_id = _anonymous_id(request.query_params.get("anonymous_id"))
        expose = request.query_params.get("expose", "true").lower() not in ("0", "false", "no")
        assigned = visitor_assignments(
            source=request.auth.source, anonymous_id=anonymous_id, context=_context(request), expose=expose
        )
        return Response(
            {
                "anonymous_id": anonymous_id,
                "assignments": [
                    {
                        "experiment": a.experiment.key,
                        "variant": a.variant.key,
                        "payload": a.variant.payload,
                        "kind": a.experiment.kind,
                        "new": a.new,
                    }
                    for a in assigned
                ],
            }
        )


class ExposuresView(APIView):
    authentication_classes = [SecretKeyAuthentication, WriteKeyAuthentication]
    permission_classes = [HasSourceKey]

    @extend_schema(
        tags=["experiments"],
        summary="Log that the visitor saw their variant (client-side exposure; the first one counts)",
        request=ExposureInSerializer,
        responses={200: ExposureOutSerializer},
    )
    def post(self, request):
        serializer = ExposureInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key = data["experiment"]
        assigned = visitor_assignments(
            source=request.auth.source,
            anonymous_id=_anonymous_id(data["anonymous_id"]),
            context=_context(request),
            expose=True,
            experiment_key=key,
        )
        if not assigned:
            return error_response(
                404, "not_in_experiment", f"experiment: {key!r} is not running, or this visitor does not qualify for it"
            )
        a = assigned[0]
        return Response({"experiment": a.experiment.key, "variant": a.variant.key, "logged": a.exposed_now})
