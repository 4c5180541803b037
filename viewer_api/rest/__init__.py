"""The hub's own REST API for clinicians and staff."""
