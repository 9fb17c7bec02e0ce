"""The web console: dual-write's admin pages, an invoice side by side and a live overview.

A process of its own (`python -m services.console`, started by `dwsim up`). It reads and acts
only through the services' public HTTP APIs, so it shows exactly what those APIs promise.
"""
