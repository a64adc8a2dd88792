"""Scale Diffusion diffusion service: real-time video diffusion over WebRTC."""
