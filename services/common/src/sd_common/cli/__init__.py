"""`sdctl`, the operator's command-line tool for the Scale Diffusion stack."""
