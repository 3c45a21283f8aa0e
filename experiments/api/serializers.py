"""Serializers of the experiments API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from experiments.models import Experiment, Metric, Variant


def choice_field(choices, **kwargs) -> serializers.ChoiceField:
    """A choice field documented inline (as a pattern: an `enum` would be pulled into a shared component),
    so that the several `kind`/`status` choice sets of the whole API never collide on one name."""
    schema = {
        "type": "string",
        "pattern": "^(" + "|".join(choices.values) + ")$",
        "description": "; ".join(f"`{v}`: {label}" for v, label in choices.choices),
    }
    field_class = extend_schema_field(schema)(type("InlineChoiceField", (serializers.ChoiceField,), {}))
    return field_class(choices=choices.choices, **kwargs)


class MetricSerializer(serializers.ModelSerializer):
    kind = choice_field(Metric.Kind, default=Metric.Kind.CONVERSION)

    class Meta:
        model = Metric
        fields = [
            "key",
            "name",
            "kind",
            "event_types",
            "property",
            "denominator_event_types",
            "window_days",
            "higher_is_better",
            "created_at",
        ]
        read_only_fields = ["created_at"]
        # The source is the caller's: uniqueness of the key is checked by the service (409).
        validators: list = []


class VariantSerializer(serializers.ModelSerializer):
    weight = serializers.FloatField(min_value=0, default=1.0)

    class Meta:
        model = Variant
        fields = ["key", "name", "weight", "payload", "is_control", "factors"]


class ExperimentSerializer(serializers.ModelSerializer):
    variants = VariantSerializer(many=True, required=False)
    primary_metric = serializers.SlugRelatedField(slug_field="key", read_only=True)
    secondary_metrics = serializers.SlugRelatedField(slug_field="key", many=True, read_only=True)
    guardrail_metrics = serializers.SlugRelatedField(slug_field="key", many=True, read_only=True)
    traffic = serializers.FloatField(min_value=0, max_value=1, default=1.0)
    kind = choice_field(Experiment.Kind, default=Experiment.Kind.AB)
    status = choice_field(Experiment.Status, read_only=True)
    alpha = serializers.FloatField(min_value=0, max_value=1, default=0.05)
    power = serializers.FloatField(min_value=0, max_value=1, default=0.8)

    class Meta:
        model = Experiment
        fields = [
            "key",
            "name",
            "hypothesis",
            "status",
            "kind",
            "layer",
            "traffic",
            "targeting",
            "consent_purpose",
            "primary_metric",
            "secondary_metrics",
            "guardrail_metrics",
            "baseline",
            "mde",
            "alpha",
            "power",
            "cuped_days",
            "planned_units_per_variant",
            "variants",
            "created_at",
            "started_at",
            "stopped_at",
        ]
        read_only_fields = ["status", "planned_units_per_variant", "created_at", "started_at", "stopped_at"]
        validators: list = []


class ExperimentWriteSerializer(ExperimentSerializer):
    """What a client sends: metrics by key."""

    primary_metric = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    secondary_metrics = serializers.ListField(child=serializers.CharField(), required=False)
    guardrail_metrics = serializers.ListField(child=serializers.CharField(), required=False)


class AssignmentOutSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    variant = serializers.CharField()
    payload = serializers.JSONField()
    kind = serializers.CharField()
    new = serializers.BooleanField(help_text="First assignment of this unit to this experiment.")


class AssignmentsOutSerializer(serializers.Serializer):
    anonymous_id = serializers.CharField()
    assignments = AssignmentOutSerializer(many=True)


class ExposureInSerializer(serializers.Serializer):
    anonymous_id = serializers.CharField(max_length=128)
    experiment = serializers.SlugField(max_length=64)


class ExposureOutSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    variant = serializers.CharField()
    logged = serializers.BooleanField(help_text="False when this unit's exposure was logged before.")


class ResultsSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    status = serializers.CharField()
    rolled_up_at = serializers.DateTimeField(allow_null=True)
    planned_units_per_variant = serializers.IntegerField(allow_null=True)
    progress = serializers.FloatField(allow_null=True)
    units = serializers.DictField(child=serializers.IntegerField())
    analysis = serializers.JSONField(allow_null=True, help_text="Comparisons, SRM, guardrail breaches and verdict.")
    factorial = serializers.ListField(child=serializers.JSONField())
    history = serializers.ListField(child=serializers.JSONField(), required=False)
