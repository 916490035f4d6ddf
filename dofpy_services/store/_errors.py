"""What a store call can fail with: every error an operator or a caller may see
is a :class:`StoreError` with a message that says what to do."""

from __future__ import annotations

__all__ = ["StoreConflict", "StoreError", "StoreRefused", "StoreUnavailable"]


class StoreError(Exception):
    """A request the store cannot carry out: unknown record, unusable database,
    newer schema, unreachable server, ... The message is for the operator."""


class StoreUnavailable(StoreError):
    """The database could not be reached, or the connection broke, during a
    call. Nothing was retried: if the call was a write that broke while
    committing, it either committed entirely or not at all; retry it only if
    doing it twice is harmless (or check first)."""


class StoreConflict(StoreError):
    """A uniqueness constraint refused a statement: another writer was first.
    The transaction was rolled back."""


class StoreRefused(StoreError):
    """The database refused a statement: a trigger raised (an append-only
    table) or the role lacks the privilege. The transaction was rolled back."""
