from __future__ import annotations

import sys

from certfan.cli.app import main

sys.exit(main())
