"""Undo and redo: every change is a history row, and reverting one is a change with its own row.

`BankUndo` is part of `MemoryBank` (`edge.bank.store`).
"""
from __future__ import annotations

import secrets
from dataclasses import replace

from edge.bank.records import HISTORY_COLUMNS, HistoryEntry, Memory, history_from_row, now
from edge.errors import InvalidInputError, NothingToUndoError
from edge.operations import AppliedOp


class BankUndo:
    """`MemoryBank`'s undo and redo (see the module)."""

    def undo(self, steps: int = 1, *, user: str | None = None, actor: str = "user") -> list[AppliedOp]:
        """Revert the last `steps` changes (a change = all operations of one `apply`), newest first.

        The revert is itself recorded in history (action UNDO) and marks
        the original rows as undone, so history is never rewritten.
        """
        owner = self._owner(user)
        if steps < 1:
            raise InvalidInputError("Undo needs at least one step.")
        with self._transaction() as conn:
            plan = self._undo_plan(conn, owner, steps)
            if not plan:
                raise NothingToUndoError(f"Nothing to undo for user {owner!r}.")
            undo_group = secrets.token_hex(6)
            return [self._revert(conn, entry, owner, actor, undo_group) for entry in plan]

    def undo_plan(self, steps: int = 1, *, user: str | None = None) -> list[HistoryEntry]:
        """What `undo(steps)` would revert, newest first (one history row per operation); nothing is changed."""
        return self._undo_plan(self._conn, self._owner(user), steps)

    @staticmethod
    def _undo_plan(conn, owner: str, steps: int) -> list[HistoryEntry]:
        groups = [r[0] for r in conn.execute(
            "SELECT op_group FROM history WHERE owner = ? AND action != 'UNDO' AND undone_by IS NULL "
            "GROUP BY op_group ORDER BY MAX(seq) DESC LIMIT ?", (owner, steps))]
        return [history_from_row(row) for group in groups for row in conn.execute(
            f"SELECT {HISTORY_COLUMNS} FROM history WHERE op_group = ? ORDER BY seq DESC", (group,))]

    def redo(self, *, user: str | None = None, actor: str = "user") -> list[AppliedOp]:
        """Put back what the latest undo reverted, as long as no other change came after it.

        Recorded like an undo (action UNDO, `reverts` the undo's rows); the
        changes it puts back can be undone again. Raises `NothingToUndoError`
        when there is no undo to redo, or when a change made after the undo
        (which the redo could overwrite) stands in the way.
        """
        owner = self._owner(user)
        with self._transaction() as conn:
            latest_change = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM history WHERE owner = ? AND action != 'UNDO'", (owner,)).fetchone()[0]
            row = conn.execute(
                "SELECT u.op_group FROM history u JOIN history r ON u.reverts = r.seq "
                "WHERE u.owner = ? AND u.action = 'UNDO' AND r.action != 'UNDO' AND u.undone_by IS NULL "
                "AND u.seq > ? ORDER BY u.seq DESC LIMIT 1", (owner, latest_change)).fetchone()
            if row is None:
                raise NothingToUndoError(
                    f"Nothing to redo for user {owner!r}.",
                    hint="redo puts back what the latest undo reverted, before any other change is made")
            redo_group = secrets.token_hex(6)
            results = []
            for entry in map(history_from_row, conn.execute(
                    f"SELECT {HISTORY_COLUMNS} FROM history WHERE op_group = ? ORDER BY seq DESC", (row[0],))):
                results.append(self._revert(conn, entry, owner, actor, redo_group))
                conn.execute("UPDATE history SET undone_by = NULL WHERE seq = ?", (entry.reverts,))  # live again
            return results

    def _revert(self, conn, entry: HistoryEntry, owner: str, actor: str, group: str) -> AppliedOp:
        stamp = now()
        rowid, current = self._current(conn, entry.memory_id, owner)
        if entry.action == "ADD":
            target = replace(current, deleted_at=stamp, updated_at=stamp)
        else:
            target = Memory.from_dict(entry.before)  # type: ignore[arg-type]
        self._write_row(conn, rowid, target, None)
        applied = self._log(conn, group, "UNDO", entry.memory_id, owner, current, target, actor, None, stamp, reverts=entry.seq)
        conn.execute("UPDATE history SET undone_by = ? WHERE seq = ?", (applied.seq, entry.seq))
        return applied
