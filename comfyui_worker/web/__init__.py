"""The jobs page: HTTP server, JSON API, routes, guard and static files.

May import: ``jobs``, ``lh``, ``workflow`` and the top-level basics.
"""
