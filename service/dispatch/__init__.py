"""Command and dispatch: the case lifecycle, its event log, deadlines, stream and evaluation.

:mod:`service.dispatch.lifecycle` is pure (no database, no HTTP) and imported by
:mod:`service.tables`; keep this package's ``__init__`` free of imports.
"""
