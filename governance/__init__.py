"""Governed change of the label tree: versions, proposals, roles and the audit log."""
