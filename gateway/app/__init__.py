"""The composition root: builds the gateway from config and owns start and stop.

``Gateway`` (``gateway.app.gateway``) composes and runs everything; what the rest of the gateway
tells it (guard and upstream events, approval events) and what the admin plane asks of it are small
adapters beside it (``events``, ``admin``).
"""

from gateway.app.gateway import Gateway

__all__ = ["Gateway"]
