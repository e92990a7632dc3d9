"""Serving restorations to many visitors: the demo's service, its settings and its request checks, without any UI."""
