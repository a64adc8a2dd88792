"""Scale Diffusion gateway: the browser-facing front door (HTTP/JSON and gRPC)."""
