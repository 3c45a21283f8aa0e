"""Admin for privacy: the queue of data-subject requests with their deadlines; encrypted traits (names only)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from unfold.admin import ModelAdmin
from unfold.decorators import display

from privacy.models import AccessLog, EncryptedTrait, SubjectRequest
from privacy.services import subject_request_process


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
class EncryptedTraitAdmin(ModelAdmin):
    list_display = ["profile", "name", "updated_at"]
    search_fields = ["name", "profile__uuid"]
    fields = ["profile", "name", "updated_at"]  # never the token
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AccessLog)
class AccessLogAdmin(ModelAdmin):
    list_display = ["at", "actor", "channel", "action", "profile_uuid", "detail"]
    list_filter = ["action", "channel"]
    search_fields = ["=profile_uuid", "actor"]
    date_hierarchy = "at"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
