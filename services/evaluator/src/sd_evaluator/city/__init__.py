"""Closed-loop evaluation in the game's own city: benchmarks, the game in headless Chromium, the runner."""
