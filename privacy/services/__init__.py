"""Writes and business rules of the privacy capability."""

from privacy.services.audit import access_record, api_actor
from privacy.services.encrypted import encrypted_traits_merge, encrypted_traits_store, encryption_keys_rotate
from privacy.services.subjects import subject_erase, subject_export, subject_request_create, subject_request_process

__all__ = [
    "access_record",
    "api_actor",
    "encrypted_traits_merge",
    "encrypted_traits_store",
    "encryption_keys_rotate",
    "subject_erase",
    "subject_export",
    "subject_request_create",
    "subject_request_process",
]
