"""Helpers shared by every service and gateway (a library, not a service)."""
