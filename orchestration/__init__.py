"""Dagster definitions only: thin assets over ``hub/`` and ``connectors/``."""
