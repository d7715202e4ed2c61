"""Which pages each role may open.

A page that is not in the role's list is never handed to st.navigation, so it has no route at all:
typing its URL lands on the default page. Governance actions are checked again inside governance/.
The roles themselves are governance's (one enum, so the roles table can hold every audience).
"""

from __future__ import annotations

from pydantic import BaseModel

from governance.roles import Role


class PageSpec(BaseModel):
    key: str
    title: str
    icon: str
    section: str
    # False for pages that work on a warehouse whose analytics were never computed.
    needs_analytics: bool = True


PAGES: dict[str, PageSpec] = {
    spec.key: spec
    for spec in (
        PageSpec(key="overview", title="Overview", icon=":material/dashboard:", section="At a glance"),
        PageSpec(key="cost_quality", title="Cost versus quality", icon=":material/payments:", section="At a glance"),
        PageSpec(key="drift", title="Drift", icon=":material/trending_up:", section="At a glance"),
        PageSpec(key="label_tree", title="Label tree", icon=":material/account_tree:", section="Analysis"),
        PageSpec(key="disagreements", title="Disagreements", icon=":material/forum:", section="Analysis"),
        PageSpec(key="annotators", title="Annotators", icon=":material/group:", section="Analysis"),
        PageSpec(key="escalation", title="Escalation", icon=":material/escalator_warning:", section="Analysis"),
        PageSpec(key="calibration", title="Calibration", icon=":material/tune:", section="Analysis"),
        PageSpec(key="governance", title="Governance", icon=":material/gavel:", section="Governance"),
        PageSpec(key="audit", title="Audit log", icon=":material/verified:", section="Governance"),
        PageSpec(
            key="roles", title="Roles", icon=":material/admin_panel_settings:", section="Governance",
            needs_analytics=False,
        ),
    )
}

LEADERSHIP_PAGES = ("overview", "cost_quality", "drift")
ANALYSIS_PAGES = (*LEADERSHIP_PAGES, "label_tree", "disagreements", "annotators", "escalation", "calibration")

ROLE_PAGES: dict[Role, tuple[str, ...]] = {
    Role.LEADERSHIP: LEADERSHIP_PAGES,
    Role.VIEWER: LEADERSHIP_PAGES,
    Role.ANALYST: ANALYSIS_PAGES,
    Role.PROPOSER: (*ANALYSIS_PAGES, "governance"),
    Role.STEWARD: (*ANALYSIS_PAGES, "governance", "audit"),
    Role.ADMIN: (*ANALYSIS_PAGES, "governance", "audit", "roles"),
    Role.AUDITOR: ("overview", "audit"),
}


def pages_for(role: Role) -> dict[str, list[PageSpec]]:
    """The role's pages grouped by section, in display order."""
    grouped: dict[str, list[PageSpec]] = {}
    for key in ROLE_PAGES[role]:
        spec = PAGES[key]
        grouped.setdefault(spec.section, []).append(spec)
    return grouped


def may_open(role: Role, page_key: str) -> bool:
    return page_key in ROLE_PAGES[role]
