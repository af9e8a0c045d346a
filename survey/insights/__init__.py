"""Insights: what keeps costing us, what we found behind it, whether fixes work."""
