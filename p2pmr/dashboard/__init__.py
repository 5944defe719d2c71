"""The status API and the dashboard page, served over HTTP (spec: ``protocols/status.md``).

:mod:`.app` is the ASGI application (starlette), read-only, over any
:class:`~p2pmr.status.StatusSource`; :mod:`.serve` runs it with hypercorn on
trio, on the repo's local socket and, when asked, on a TCP address.
"""
