"""``python -m maqet_engine`` runs the CLI."""

from maqet_engine.cli.main import main

raise SystemExit(main())
