"""Who a new case goes to: the grid's responsible worker, else the backup, else the supervisor.

A pure rule, so that the pipeline, the hotline intake and the service all dispatch the same way and every
choice carries its reason for the audit trail. Reasons are short English codes; the part before the colon
names the fallback step and :data:`REASON_LABELS` gives its Chinese label for display.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspection.errors import InspectionError

REASON_LABELS = {
    "responsible": "责任网格员",
    "backup": "备岗网格员",
    "supervisor": "网格长/监督员",
    "none": "无人可派",
}


@dataclass(frozen=True)
class Worker:
    """A grid worker as dispatch sees them.

    Attributes
    ----------
    username : str
    absent : bool
        On leave, sick, or otherwise not patrolling today.
    open_cases : int
        Cases now assigned to them and not yet handled.
    max_open : int
        How many open cases they may hold; at ``open_cases >= max_open`` they are overloaded.
    """

    username: str
    absent: bool
    open_cases: int
    max_open: int

    def __post_init__(self):
        if not self.username:
            raise InspectionError("a worker needs a username")
        if self.open_cases < 0 or self.max_open < 0:
            raise InspectionError(
                f"worker {self.username}: open_cases ({self.open_cases}) and max_open ({self.max_open}) "
                "cannot be negative"
            )

    @property
    def overloaded(self) -> bool:
        """Holding as many open cases as allowed, or more."""
        return self.open_cases >= self.max_open


def choose_assignee(
    grid_code: str,
    *,
    responsible: Worker | None,
    backup: Worker | None,
    supervisor: str | None,
) -> tuple[str | None, str]:
    """The username a case in ``grid_code`` goes to, and why.

    The responsible worker unless absent or overloaded; then the backup on the same terms; then the
    supervisor, who is never refused (supervisors redistribute); ``None`` when there is nobody at all,
    which the caller shows as an undispatched case.

    Examples
    --------
    >>> wang = Worker("wang", absent=False, open_cases=20, max_open=20)
    >>> li = Worker("li", absent=False, open_cases=3, max_open=20)
    >>> choose_assignee("110105001001001", responsible=wang, backup=li, supervisor="zhao")
    ('li', 'backup: responsible overloaded (20/20)')
    >>> choose_assignee("110105001001001", responsible=None, backup=None, supervisor=None)
    (None, 'none: no available worker, backup or supervisor for grid 110105001001001 (no responsible worker, no backup)')
    """
    if _available(responsible):
        return responsible.username, "responsible"
    why_not_responsible = _unavailable("responsible", responsible, "no responsible worker")
    if _available(backup):
        return backup.username, f"backup: {why_not_responsible}"
    why_not_either = f"{why_not_responsible}, {_unavailable('backup', backup, 'no backup')}"
    if supervisor:
        return supervisor, f"supervisor: responsible and backup unavailable ({why_not_either})"
    return None, f"none: no available worker, backup or supervisor for grid {grid_code} ({why_not_either})"


def _available(worker: Worker | None) -> bool:
    return worker is not None and not worker.absent and not worker.overloaded


def _unavailable(role: str, worker: Worker | None, missing: str) -> str:
    if worker is None:
        return missing
    if worker.absent:
        return f"{role} absent"
    return f"{role} overloaded ({worker.open_cases}/{worker.max_open})"
