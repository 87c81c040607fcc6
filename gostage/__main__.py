"""``python -m gostage``: the same command line as the ``gostage`` script."""

from gostage._cli import main

raise SystemExit(main())
