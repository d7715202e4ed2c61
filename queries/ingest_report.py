"""The result of an ingest, shared by the API, the command line and the dashboard."""

from __future__ import annotations

from pydantic import BaseModel


class IngestReport(BaseModel):
    """What an ingest did (or, for a dry run, would do)."""

    kind: str
    file_name: str
    format: str
    sha256: str
    tree_version: int
    rows_read: int = 0
    rows_accepted: int = 0
    quarantined: dict[str, int] = {}
    batch_id: int | None = None
    duplicate_of_batch: int | None = None
    dry_run: bool = False
    new_items: int = 0
    new_annotators: int = 0
    messages: list[str] = []
    examples: list[str] = []  # the first quarantined rows, "row N reason: message"

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())
