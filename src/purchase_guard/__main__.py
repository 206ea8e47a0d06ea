"""python -m purchase_guard"""

from purchase_guard.cli import main

raise SystemExit(main())
