"""`python -m gateway` is the `tiergate` command."""

from gateway.cli import main

raise SystemExit(main())
