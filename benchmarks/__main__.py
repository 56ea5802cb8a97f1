"""``python -m benchmarks [--quick] [--only 1,2]``."""

from benchmarks.run import main

raise SystemExit(main())
