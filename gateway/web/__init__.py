"""The admin plane: the approvals REST API under ``/admin/api/`` and the web UI at ``/admin``."""
