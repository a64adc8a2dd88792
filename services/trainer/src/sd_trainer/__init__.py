"""Scale Diffusion trainer service: CILRS training runs per dataset version."""
