"""Scale Diffusion evaluator service: CARLA Leaderboard 2.0 evaluation of checkpoints."""
