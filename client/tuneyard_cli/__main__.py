from __future__ import annotations

import sys

from tuneyard_cli.main import main

sys.exit(main())
