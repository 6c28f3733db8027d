"""Temp tables owned by the step that makes them.

An identity step (the deterministic layer, the matching features, blocking, scoring, clustering, the
summary) works through intermediate tables. Each step opens `step_tables(conn, "<step>")` and names its
tables through it: they are called `<step>__<name>`, so two steps never share a table by accident, and
they are dropped when the step ends, on error too. A table another step reads is handed to it by name,
as an argument, never found by a name both modules happen to know. The one exception is the matching
pipeline's chain (match_records → match_pairs → match_vectors → match_scores), whose plain names the
SQL of several matching modules reads, like Splink's `__splink__df_*` tables: the pipeline owns them
(`own`) and drops them.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd


class StepTables:
    """The temp tables and registered frames of one step; see step_tables."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, step: str) -> None:
        self.conn = conn
        self.step = step
        self._tables: list[str] = []
        self._frames: list[str] = []

    def __call__(self, name: str) -> str:
        """The step's name for its table `name`; the table is dropped when the step ends."""
        table = f"{self.step}__{name}"
        if table not in self._tables:
            self._tables.append(table)
        return table

    def own(self, table: str) -> str:
        """Take ownership of a table of the pipeline's chain, which keeps its plain name (match_records,
        match_pairs, ...) because several modules' SQL reads it; it is dropped when the step ends."""
        if table not in self._tables:
            self._tables.append(table)
        return table

    def frame(self, name: str, frame: pd.DataFrame) -> str:
        """Register `frame` under the step's name for it, unregistered when the step ends."""
        view = f"{self.step}__{name}"
        self.conn.register(view, frame)
        if view not in self._frames:
            self._frames.append(view)
        return view

    def drop(self, name: str) -> None:
        """Drop a table (or unregister a frame) before the step ends, to free its memory for what follows:
        a chain table the step owns by its plain name, else the step's table or frame `name`."""
        view = f"{self.step}__{name}"
        if view in self._frames:  # a registered frame: unregistering lets its memory go
            self.conn.unregister(view)
            self._frames.remove(view)
            return
        table = name if name in self._tables else self(name)
        self.conn.execute(f"drop table if exists {table}")
        self._tables.remove(table)

    def close(self, failing: bool = False) -> None:
        """Drop every table and unregister every frame; while an error is on its way out, a drop that fails
        too must not hide it."""
        for view in reversed(self._frames):
            self.conn.unregister(view)
        for table in reversed(self._tables):
            try:
                self.conn.execute(f"drop table if exists {table}")
            except duckdb.Error:
                if not failing:
                    raise
        self._frames.clear()
        self._tables.clear()


@contextmanager
def step_tables(conn: duckdb.DuckDBPyConnection, step: str) -> Iterator[StepTables]:
    """The step's temp tables: `tables("x")` names one (`<step>__x`); all are dropped when the block ends."""
    tables = StepTables(conn, step)
    try:
        yield tables
    except BaseException:
        tables.close(failing=True)
        raise
    tables.close()
