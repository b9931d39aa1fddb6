"""Enumerations of the shop."""

from enum import StrEnum


class ReceiptStatus(StrEnum):
    """What happened to a purchase's emailed receipt."""

    QUEUED = "queued"
    #: The notifications plugin is not installed or not enabled.
    NO_NOTIFICATIONS = "notifications plugin not available"
    #: The broker did not take the message; the purchase is saved all the same.
    BROKER_DOWN = "task queue unreachable"
