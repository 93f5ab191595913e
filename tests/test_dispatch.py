"""Dispatch rule: responsible worker, then backup, then supervisor, then nobody, each with its reason."""

from __future__ import annotations

import pytest

from inspection.dispatch import REASON_LABELS, Worker, choose_assignee
from inspection.errors import InspectionError

GRID = "110105001001001"


def worker(name, *, absent=False, open_cases=0, max_open=20):
    return Worker(name, absent=absent, open_cases=open_cases, max_open=max_open)


def test_responsible_worker_first():
    assert choose_assignee(GRID, responsible=worker("wang"), backup=worker("li"), supervisor="zhao") == (
        "wang",
        "responsible",
    )


def test_responsible_one_below_the_limit_still_gets_it():
    chosen = choose_assignee(GRID, responsible=worker("wang", open_cases=19), backup=worker("li"), supervisor="zhao")
    assert chosen == ("wang", "responsible")


def test_backup_when_responsible_absent():
    chosen = choose_assignee(GRID, responsible=worker("wang", absent=True), backup=worker("li"), supervisor="zhao")
    assert chosen == ("li", "backup: responsible absent")


@pytest.mark.parametrize(("open_cases", "reason"), [(20, "(20/20)"), (23, "(23/20)")])
def test_backup_when_responsible_overloaded(open_cases, reason):
    chosen = choose_assignee(
        GRID, responsible=worker("wang", open_cases=open_cases), backup=worker("li"), supervisor="zhao"
    )
    assert chosen == ("li", f"backup: responsible overloaded {reason}")


def test_absence_is_the_reason_given_when_both_apply():
    chosen = choose_assignee(
        GRID, responsible=worker("wang", absent=True, open_cases=25), backup=worker("li"), supervisor="zhao"
    )
    assert chosen == ("li", "backup: responsible absent")


def test_backup_when_grid_has_no_responsible_worker():
    assert choose_assignee(GRID, responsible=None, backup=worker("li"), supervisor="zhao") == (
        "li",
        "backup: no responsible worker",
    )


def test_supervisor_when_responsible_and_backup_unavailable():
    chosen = choose_assignee(
        GRID,
        responsible=worker("wang", absent=True),
        backup=worker("li", open_cases=5, max_open=5),
        supervisor="zhao",
    )
    assert chosen == (
        "zhao",
        "supervisor: responsible and backup unavailable (responsible absent, backup overloaded (5/5))",
    )


def test_supervisor_when_grid_has_nobody():
    chosen = choose_assignee(GRID, responsible=None, backup=None, supervisor="zhao")
    assert chosen == ("zhao", "supervisor: responsible and backup unavailable (no responsible worker, no backup)")


def test_backup_absent_falls_to_supervisor():
    chosen = choose_assignee(
        GRID, responsible=worker("wang", open_cases=30), backup=worker("li", absent=True), supervisor="zhao"
    )
    assert chosen == (
        "zhao",
        "supervisor: responsible and backup unavailable (responsible overloaded (30/20), backup absent)",
    )


@pytest.mark.parametrize("supervisor", [None, ""])
def test_nobody_at_all(supervisor):
    chosen = choose_assignee(GRID, responsible=None, backup=None, supervisor=supervisor)
    assert chosen == (
        None,
        f"none: no available worker, backup or supervisor for grid {GRID} (no responsible worker, no backup)",
    )


def test_nobody_available_names_why():
    chosen = choose_assignee(GRID, responsible=worker("wang", absent=True), backup=None, supervisor=None)
    assert chosen == (
        None,
        f"none: no available worker, backup or supervisor for grid {GRID} (responsible absent, no backup)",
    )


def test_zero_capacity_is_always_overloaded():
    chosen = choose_assignee(GRID, responsible=worker("wang", max_open=0), backup=worker("li"), supervisor=None)
    assert chosen == ("li", "backup: responsible overloaded (0/0)")


def test_every_reason_has_a_chinese_label():
    reasons = [
        choose_assignee(GRID, responsible=worker("wang"), backup=None, supervisor=None)[1],
        choose_assignee(GRID, responsible=None, backup=worker("li"), supervisor=None)[1],
        choose_assignee(GRID, responsible=None, backup=None, supervisor="zhao")[1],
        choose_assignee(GRID, responsible=None, backup=None, supervisor=None)[1],
    ]
    assert [REASON_LABELS[reason.split(":")[0]] for reason in reasons] == ["责任网格员", "备岗网格员", "网格长/监督员", "无人可派"]


@pytest.mark.parametrize(("name", "open_cases", "max_open"), [("", 0, 20), ("wang", -1, 20), ("wang", 0, -1)])
def test_impossible_workers_are_refused(name, open_cases, max_open):
    with pytest.raises(InspectionError):
        Worker(name, absent=False, open_cases=open_cases, max_open=max_open)
