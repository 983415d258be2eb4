"""``python -m npconv`` is the ``npconv`` command."""

from .cli import main

raise SystemExit(main())
