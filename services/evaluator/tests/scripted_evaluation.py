"""`python -m sd_evaluator.evaluate` with the corridor benchmark kind registered (corridor.py), for
tests that need the real process: exit codes, SIGTERM, the launcher's supervision."""

from __future__ import annotations

import sys

import corridor
from sd_evaluator import evaluate

if __name__ == "__main__":
    corridor.install()
    sys.exit(evaluate.main(sys.argv[1:], load_model=corridor.load_model))
