"""gpu checks: filled in by the health-check work in progress."""
