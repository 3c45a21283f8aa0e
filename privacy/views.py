"""Admin pages of the privacy capability: the data inventory for the periodic privacy audit."""

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from privacy.selectors import data_inventory


@staff_member_required
def inventory(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Data inventory", **data_inventory()}
    return TemplateResponse(request, "privacy/inventory.html", context)
