"""Makes the tests' shared modules (operator_schemas.py) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
