"""Pagination: cursors, stable under concurrent inserts."""

from rest_framework.pagination import CursorPagination as BaseCursorPagination


class CursorPagination(BaseCursorPagination):
    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 500
