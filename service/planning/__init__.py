"""Boundary planning glue: plan metrics from the database (:mod:`.metrics`), automatic
proposals as drafts (:mod:`.proposals`) and what-if coverage of a draft (:mod:`.whatif`).

The geometry and the measures are pure (:mod:`geo.planmetrics`, :mod:`geo.proposal`); the
drafts are :mod:`service.repositories.plans`'. Functions take a synchronous SQLAlchemy
connection and never commit.
"""
