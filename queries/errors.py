"""User-facing failures.

Every expected fault (a bad file, a locked or too-new warehouse, a bad filter) is raised as a
``LabelgovError`` whose message says what to fix, so that front ends can print one line and exit
non-zero instead of showing a traceback.
"""


class LabelgovError(Exception):
    """An expected fault with a message written for the person who can fix it."""


class WarehouseBusy(LabelgovError):
    """Another process holds the warehouse's write lock for longer than we are willing to wait."""
