from __future__ import annotations

import sys

from certfan.cli import main

sys.exit(main())
