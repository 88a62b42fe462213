"""``python -m gateway.cli``: the same as the ``interlock`` command."""

from gateway.cli import main

raise SystemExit(main())
