"""The evaluator's tests: result files written out by hand (leaderboard_files.py) importable beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # leaderboard_files beside this file
