"""Admin for collection: sources and keys, profiles with timeline and aggregates, read-only events."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from unfold.admin import ModelAdmin, TabularInline
from unfold.decorators import action, display

from privacy.masking import phone_e164
from privacy.services import access_record
from tracking.models import Event, Identity, IngestRejection, Profile, ProfileEventStat, SecretKey, Source
from tracking.services.identity import identity_hash
from tracking.services.sources import secret_key_create, secret_key_revoke, source_update
from tracking.views import embed_code

TIMELINE_LENGTH = 50


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class SecretKeyInline(ReadOnlyMixin, TabularInline):
    model = SecretKey
    fields = ["prefix", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Source)
class SourceAdmin(ModelAdmin):
    list_display = ["name", "write_key", "origins", "is_active", "created_at"]
    search_fields = ["name", "write_key"]
    list_filter = ["is_active"]
    readonly_fields = ["write_key", "created_at", "snippet", "rejections"]
    fields = [
        "name",
        "allowed_origins",
        "consent_regime",
        "consent_policy_version",
        "banner_title",
        "banner_text",
        "pii_denylist",
        "phone_region",
        "encrypted_traits",
        "retention_days",
        "cookie_days",
        "is_active",
        "write_key",
        "snippet",
        "rejections",
        "created_at",
    ]
    inlines = [SecretKeyInline]
    actions = ["create_secret_key"]
    actions_detail = ["create_secret_key_detail"]

    @display(description="Allowed origins")
    def origins(self, obj: Source) -> str:
        return ", ".join(obj.allowed_origins or []) or "— (server-side only)"

    @display(description="Embed code")
    def snippet(self, obj: Source) -> str:
        if not obj.pk:
            return "Save the source to get its embed code."
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", embed_code(obj, host=self._host))

    @display(description="Refused events (last 30 days)")
    def rejections(self, obj: Source) -> str:
        rows = IngestRejection.objects.filter(source=obj).order_by("-day")[:30]
        if not rows:
            return "none"
        return format_html_join("", "<div>{}: {} × {}</div>", ((r.day, r.reason, r.count) for r in rows))

    def save_model(self, request, obj, form, change):
        source_update(source=obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        self._host = request.build_absolute_uri("/").rstrip("/")
        return super().get_form(request, obj, change, **kwargs)

    def _new_key(self, request: HttpRequest, source: Source) -> None:
        _, plaintext = secret_key_create(source=source, name=f"created in admin by {request.user}")
        messages.warning(
            request,
            format_html(
                "New secret key for {}: <code>{}</code> — copy it now, it is not shown again.", source, plaintext
            ),
        )

    @admin.action(description="Create a secret key")
    def create_secret_key(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        for source in queryset:
            self._new_key(request, source)

    @action(description="Create a secret key", url_path="create-secret-key")
    def create_secret_key_detail(self, request: HttpRequest, object_id: int):
        from django.shortcuts import redirect

        self._new_key(request, Source.objects.get(pk=object_id))
        return redirect("admin:tracking_source_change", object_id)


@admin.register(SecretKey)
class SecretKeyAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = ["prefix", "source", "name", "created_at", "last_used_at", "active"]
    list_filter = ["source"]
    search_fields = ["prefix", "name"]
    actions = ["revoke"]

    @display(description="Active", boolean=True)
    def active(self, obj: SecretKey) -> bool:
        return obj.is_active

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[SecretKey]) -> None:
        for key in queryset:
            secret_key_revoke(key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


class IdentityInline(ReadOnlyMixin, TabularInline):
    model = Identity
    fields = ["kind", "value", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False


class EventStatInline(ReadOnlyMixin, TabularInline):
    model = ProfileEventStat
    fields = ["event_type", "count", "value_sum", "first_at", "last_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-count"]


@admin.register(Profile)
class ProfileAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = [
        "uuid",
        "last_seen_at",
        "event_count",
        "session_count",
        "purchase_count",
        "revenue",
        "last_device_type",
        "last_country",
        "last_traffic_source",
    ]
    list_filter = ["last_device_type", "last_traffic_source", "last_country", "last_source"]
    search_fields = ["uuid", "identities__value"]
    date_hierarchy = "last_seen_at"
    show_full_result_count = False
    readonly_fields = [
        "uuid",
        "traits",
        "first_seen_at",
        "last_seen_at",
        "event_count",
        "session_count",
        "purchase_count",
        "revenue",
        "last_source",
        "last_device_type",
        "last_os",
        "last_browser",
        "last_country",
        "last_traffic_source",
        "timeline",
    ]
    fields = readonly_fields
    inlines = [IdentityInline, EventStatInline]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        profile = Profile.objects.filter(pk=object_id).only("uuid").first()
        if profile is not None:
            access_record(actor=request.user.get_username(), channel="admin", action="view", profile_uuid=profile.uuid)
        return super().change_view(request, object_id, form_url, extra_context)

    def get_search_results(self, request, queryset, search_term):
        # User ids and emails are stored as keyed hashes: search by the hash of what was typed too.
        term = search_term.strip()
        results, distinct = super().get_search_results(request, queryset, search_term)
        if term:
            hashes = [identity_hash(term), identity_hash(term, kind=Identity.Kind.EMAIL)]
            phone = phone_e164(term, None)
            if phone:
                hashes.append(identity_hash(phone, kind=Identity.Kind.PHONE))
            results = results | queryset.filter(identities__value__in=hashes)
            distinct = True
        return results, distinct

    @display(description=f"Timeline (latest {TIMELINE_LENGTH})")
    def timeline(self, obj: Profile) -> str:
        events = obj.events.select_related("source").order_by("-timestamp", "-id")[:TIMELINE_LENGTH]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    e.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                    e.type,
                    e.source,
                    e.device_type,
                    e.traffic_source,
                    str(e.properties)[:160],
                )
                for e in events
            ),
        )
        return format_html(
            "<table><tr><th>When</th><th>Event</th><th>Source</th><th>Device</th><th>Traffic</th>"
            "<th>Properties</th></tr>{}</table>",
            rows,
        )


@admin.register(Event)
class EventAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = [
        "timestamp",
        "type",
        "kind",
        "profile_link",
        "source",
        "device_type",
        "country",
        "traffic_source",
        "value",
    ]
    list_filter = ["kind", "source", "device_type", "traffic_source", "country"]
    search_fields = ["=message_id", "=anonymous_id", "type"]
    date_hierarchy = "timestamp"
    show_full_result_count = False
    list_select_related = ["source", "profile"]
    readonly_fields = [f.name for f in Event._meta.fields]

    @display(description="Profile")
    def profile_link(self, obj: Event) -> str:
        return format_html('<a href="../profile/{}/change/">{}</a>', obj.profile_id, str(obj.profile.uuid)[:8])


@admin.register(IngestRejection)
class IngestRejectionAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = ["day", "source", "reason", "count"]
    list_filter = ["reason", "source"]
    date_hierarchy = "day"
