"""Scale Diffusion shared library: what every service needs, nothing service-specific."""
