"""Persistent customer ids (cdp_assets/identity/registry.py): the survivor rules, lineage and never reusing an id."""

from datetime import datetime

import duckdb
import pandas as pd
import pytest

from cdp_assets.identity.registry import assign_ids, new_id
from resources.sql import Sql
from resources.warehouse import bootstrap

pytestmark = pytest.mark.unit


class Registry:
    """Feeds clusterings (lists of record ids per customer) to assign_ids, as the identity stage does."""

    def __init__(self) -> None:
        conn = duckdb.connect(":memory:")
        bootstrap(conn)
        self.sql = Sql(conn)
        self.run = 0

    def assign(
        self, groups: list[list[str]], settings: str = "settings", map_kept: bool = False
    ) -> tuple[object, dict[str, str]]:
        self.run += 1
        rows = [("crm", record, "person", c) for c, records in enumerate(groups) for record in records]
        frame = pd.DataFrame(rows, columns=["source", "source_record_id", "role", "component"])
        with self.sql.registered("clustering", frame):
            self.sql.create_table_as("labelled", "select * from clustering")
        changes = assign_ids(
            self.sql,
            "labelled",
            "assigned",
            run_id=f"run{self.run}",
            at=datetime(2026, 1, self.run),
            settings=settings,
            map_kept=map_kept,
        )
        ids = self.sql.rows(
            "select l.source_record_id, a.customer_id from labelled l join assigned a using (component)"
        )
        return changes, dict(ids)

    def history(self) -> list[tuple]:
        return self.sql.rows(
            "select run_seq, event, customer_id, related_id, reason from cdp.customer_id_history "
            "order by run_seq, event, customer_id"
        )

    def aliases(self) -> dict[str, tuple[str | None, str]]:
        return {a: (c, s) for a, c, s in self.sql.rows("select * from cdp.customer_aliases")}


def test_first_ids_are_derived_from_the_smallest_record_and_a_rerun_changes_nothing() -> None:
    registry = Registry()
    _, first = registry.assign([["a1", "a2"], ["b1"]])
    assert first == {"a1": new_id("crm/a1"), "a2": new_id("crm/a1"), "b1": new_id("crm/b1")}
    changes, again = registry.assign([["b1"], ["a2", "a1"]])
    assert again == first
    assert (changes.kept, changes.issued, changes.merged, changes.split) == (2, 0, 0, 0)


def test_a_merge_keeps_the_oldest_id_and_the_other_becomes_its_alias() -> None:
    registry = Registry()
    _, before = registry.assign([["b1"]])
    registry.assign([["b1"], ["a1"]])  # a1 is issued later, though its record id sorts first
    changes, after = registry.assign([["a1", "b1"]])
    assert after["a1"] == after["b1"] == before["b1"]
    assert changes.merged == 1
    assert registry.aliases()[new_id("crm/a1")] == (before["b1"], "merged")
    assert (3, "merged", new_id("crm/a1"), before["b1"], "link rules") in registry.history()


def test_a_split_leaves_the_id_with_the_larger_part_and_never_reissues_a_name() -> None:
    registry = Registry()
    _, merged = registry.assign([["a1", "a2", "b1"]])
    _, split = registry.assign([["a1"], ["a2", "b1"]])
    assert split["a2"] == split["b1"] == merged["a1"]
    # The part holding a1 would be named after crm/a1, which is taken: it gets the next free name.
    assert split["a1"] == new_id("crm/a1", 1)
    assert (2, "split", new_id("crm/a1", 1), merged["a1"], "link rules") in registry.history()
    # A tie keeps the id with the part holding its oldest record.
    _, tie = registry.assign([["a2"], ["b1"]], settings="changed")
    assert tie["a2"] == merged["a1"] and tie["b1"] not in set(split.values())
    assert "config change" in {row[4] for row in registry.history() if row[0] == 3}


def test_an_absorbed_id_follows_its_survivor_through_later_merges() -> None:
    registry = Registry()
    registry.assign([["a1"], ["b1"], ["c1"]])
    registry.assign([["a1"], ["b1", "c1"]])
    _, ids = registry.assign([["a1", "b1", "c1"]])
    aliases = registry.aliases()
    assert {aliases[new_id(f"crm/{r}")][0] for r in ("a1", "b1", "c1")} == {ids["a1"]}


def test_an_id_whose_records_are_gone_is_retired_and_not_issued_again() -> None:
    registry = Registry()
    registry.assign([["a1"], ["b1"]])
    changes, _ = registry.assign([["a1"]])
    assert changes.retired == 1
    assert registry.aliases()[new_id("crm/b1")] == (None, "retired")
    _, back = registry.assign([["a1"], ["b1"]])
    assert back["b1"] == new_id("crm/b1", 1)


def test_a_name_retired_again_and_again_gets_the_next_free_one_each_time() -> None:
    """Each return of a1 after its id was retired takes the next name not yet issued, past the few names
    looked up at once."""
    registry = Registry()
    names = []
    for _ in range(7):
        _, ids = registry.assign([["a1"], ["b1"]])
        names.append(ids["a1"])
        registry.assign([["b1"]])
    assert names == [new_id("crm/a1", attempt) for attempt in range(7)]


def test_records_moving_to_an_existing_customer_are_recorded() -> None:
    registry = Registry()
    _, first = registry.assign([["a1", "a2", "a3"], ["b1"]])
    _, after = registry.assign([["a1", "a2"], ["a3", "b1"]])
    # b1's customer keeps its id; a3 left a1's (which lives on with the larger part) to join it.
    assert after["a3"] == first["b1"] and after["a1"] == first["a1"]
    assert (2, "moved", first["b1"], first["a1"], "link rules") in registry.history()


def test_customers_of_one_size_that_traded_records_are_not_taken_for_unchanged() -> None:
    """An unchanged customer keeps its id without the rules being run on it, found by comparing digests of
    its records with those of each id of last time: a customer of the same size holding other records
    must go through the rules, and one that lost a record too."""
    registry = Registry()
    _, first = registry.assign([["a1", "a2"], ["b1", "b2"], ["c1", "c2", "c3"]])
    changes, after = registry.assign([["a1", "a2", "b1"], ["b2", "d1"], ["c1", "c2"]])
    # b's records are split one and one: the id goes with its oldest record, b1, into a's customer, where
    # a's id, issued first, survives. The customer holding b2 gets a new id, split from b's.
    assert after["a1"] == after["b1"] == first["a1"]
    assert after["b2"] == after["d1"] == new_id("crm/b2")
    assert after["c1"] == first["c1"]
    assert (changes.kept, changes.issued, changes.merged, changes.split) == (2, 1, 1, 1)
    assert (2, "split", new_id("crm/b2"), first["b1"], "link rules") in registry.history()
    again, same = registry.assign([["c2", "c1"], ["d1", "b2"], ["b1", "a2", "a1"]])
    assert same == after
    assert (again.kept, again.issued, again.merged, again.split, again.retired) == (3, 0, 0, 0, 0)


def _written(registry: Registry) -> tuple[list[tuple], list[tuple]]:
    return (
        registry.sql.rows("select * from cdp.identity_map order by all"),
        registry.sql.rows("select * from identity.record_ids order by all"),
    )


def test_a_small_change_rewrites_only_its_records_and_leaves_what_a_whole_rewrite_leaves(monkeypatch) -> None:
    customers = [[f"r{c:03d}a", f"r{c:03d}b"] for c in range(100)]
    # One merge, one new record, one record gone, one record moving to another customer.
    changed = [*customers[4:], customers[0] + customers[1], customers[2] + ["new"], customers[3][:1] + ["r005a"]]
    changed[1] = ["r005b"]
    statements: list[str] = []
    execute = Sql.execute

    def recorded(self: Sql, text: str, params: object = None) -> None:
        statements.append(text)
        execute(self, text, params)

    monkeypatch.setattr(Sql, "execute", recorded)
    small, whole = Registry(), Registry()
    for registry in (small, whole):
        registry.assign(customers)
    statements.clear()
    small.assign(changed, map_kept=True)
    assert any(s.startswith("delete from identity.record_ids") for s in statements)
    statements.clear()
    whole.assign(changed)  # the map not known to be the last run's: written whole
    assert not any(s.startswith("delete from identity.record_ids") for s in statements)
    assert _written(small) == _written(whole)
    assert small.history() == whole.history()
    map_rows, _ = _written(small)
    assert {r[1] for r in map_rows} == {r for c in changed for r in c}
