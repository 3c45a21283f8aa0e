"""Admin for privacy: purposes and consent, data-subject requests with deadlines, encrypted traits, access log."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from unfold.admin import ModelAdmin
from unfold.decorators import display

from privacy.models import (
    AccessLog,
    CategoryMapping,
    ConsentRecord,
    ConsentState,
    EncryptedTrait,
    Purpose,
    SubjectRequest,
)
from privacy.services import subject_request_process
from privacy.services.consent import purposes_forget


class ReadOnlyAdmin(ModelAdmin):
    """Records nobody edits by hand: they are written by the platform, as evidence."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SubjectRequest)
class SubjectRequestAdmin(ModelAdmin):
    list_display = ["id", "kind", "regulation", "status", "deadline", "created_at", "completed_at", "source"]
    list_filter = ["status", "kind", "regulation", "source"]
    readonly_fields = [f.name for f in SubjectRequest._meta.fields if f.name != "result"] + ["outcome"]
    exclude = ["result"]
    ordering = ["status", "due_at"]
    actions = ["process_now"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # filed through the API (or a script), so that the subject is named by a hashed identifier

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @display(description="Deadline", label={"overdue": "danger", "due": "warning", "met": "success"})
    def deadline(self, obj: SubjectRequest):
        if obj.completed_at:
            return "met", f"{obj.due_at:%Y-%m-%d}"
        left = (obj.due_at - timezone.now()).days
        return ("overdue" if left < 0 else "due"), f"{obj.due_at:%Y-%m-%d} ({left} days left)"

    @display(description="Outcome")
    def outcome(self, obj: SubjectRequest) -> str:
        if not obj.completed_at:
            return "pending"
        if obj.kind == SubjectRequest.Kind.ERASE:
            return ", ".join(f"{name}: {n}" for name, n in (obj.result.get("deleted") or {}).items()) or "nothing held"
        export = obj.result.get("export") or {}
        return ", ".join(f"{name}: {len(rows)}" for name, rows in export.items() if isinstance(rows, list))

    @admin.action(description="Process the selected requests now")
    def process_now(self, request: HttpRequest, queryset: QuerySet[SubjectRequest]) -> None:
        for filed in queryset:
            subject_request_process(request_id=str(filed.pk))
        messages.success(request, f"Processed {queryset.count()} request(s).")


@admin.register(EncryptedTrait)
class EncryptedTraitAdmin(ReadOnlyAdmin):
    list_display = ["profile", "name", "updated_at"]
    search_fields = ["name", "profile__uuid"]
    fields = ["profile", "name", "updated_at"]  # never the token
    readonly_fields = fields


@admin.register(AccessLog)
class AccessLogAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "channel", "action", "profile_uuid", "detail"]
    list_filter = ["action", "channel"]
    search_fields = ["=profile_uuid", "actor"]
    date_hierarchy = "at"


class PurposeCacheMixin:
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        purposes_forget()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        purposes_forget()


@admin.register(Purpose)
class PurposeAdmin(PurposeCacheMixin, ModelAdmin):
    list_display = ["key", "name", "legal_basis", "required", "position"]
    list_editable = ["position"]
    fields = ["key", "name", "description", "legal_basis", "required", "event_types", "position"]


@admin.register(CategoryMapping)
class CategoryMappingAdmin(PurposeCacheMixin, ModelAdmin):
    list_display = ["category", "purpose"]
    list_filter = ["purpose"]


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "profile", "purpose", "status", "origin", "policy_version", "source"]
    list_filter = ["purpose", "status", "origin", "source"]
    search_fields = ["=profile__uuid"]
    date_hierarchy = "created_at"
    list_select_related = ["profile", "purpose", "source"]


@admin.register(ConsentState)
class ConsentStateAdmin(ReadOnlyAdmin):
    list_display = ["profile", "purpose", "granted", "policy_version", "origin", "updated_at"]
    list_filter = ["purpose", "granted", "origin"]
    search_fields = ["=profile__uuid"]
    list_select_related = ["profile", "purpose"]
