"""Evaluation on a CARLA server through the Leaderboard 2.0: the agent files, the route planner, the route
files (benchmarks) and the runner that starts the leaderboard. Only agent.py and constant_agent.py need
the `carla` package; the rest is plain Python."""
