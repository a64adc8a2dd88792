"""The Scale Diffusion operator: custom resources for dataset versions, training runs and evaluations."""
