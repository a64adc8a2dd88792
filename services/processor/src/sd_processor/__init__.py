"""Scale Diffusion processor service: align, splice, clean and export CILRS segments."""
