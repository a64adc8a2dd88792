"""Makes the tests' shared modules (operator_schemas.py, kube_emulator.py) importable, and their fixtures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from kube_emulator import cluster  # noqa: E402,F401  (a fixture)
