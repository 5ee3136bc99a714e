"""Metrics, evaluation protocols, experiments and the report."""
