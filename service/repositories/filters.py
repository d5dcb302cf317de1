"""The WHERE of a listing, built filter by filter: each condition with its parameters."""

from __future__ import annotations

from typing import Any

__all__ = ["Where"]


class Where:
    """Conditions joined by AND, and the parameters they bind."""

    def __init__(self, *conditions: str, **params: Any):
        self.conditions = list(conditions)
        self.params: dict[str, Any] = params

    def add(self, condition: str, **params: Any) -> None:
        self.conditions.append(condition)
        self.params.update(params)

    def given(self, condition: str, **params: Any) -> None:
        """Add ``condition`` unless a value it binds is None (that filter was not asked for)."""
        if all(value is not None for value in params.values()):
            self.add(condition, **params)

    def equal(self, **columns: Any) -> None:
        """Add ``t.column = value`` for each column whose value is not None."""
        for column, value in columns.items():
            self.given(f"t.{column} = :{column}", **{column: value})

    def sql(self) -> str:
        return " AND ".join(self.conditions)
