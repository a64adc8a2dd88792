"""Scale Diffusion ingest service: consumes object-created events, catalogs and dispatches sessions."""
