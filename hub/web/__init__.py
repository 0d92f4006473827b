"""``memberhub serve``: the JSON API under /api/v1 and the steward console (server-rendered pages)."""
