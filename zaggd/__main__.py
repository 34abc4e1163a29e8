"""python -m zaggd is the zaggd command."""

from zaggd.cli import main

raise SystemExit(main())
