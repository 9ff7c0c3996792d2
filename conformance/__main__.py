"""``python -m dla.conformance``: the ``dla-conformance`` command line."""

from dla.conformance.cli import main

raise SystemExit(main())
