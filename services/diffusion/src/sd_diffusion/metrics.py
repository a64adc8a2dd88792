"""The diffusion service's Prometheus metrics (served on /metrics by the service runtime)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Frame latencies at 30-60 fps live between a few and a few hundred milliseconds.
FRAME_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)

FRAMES = Counter("sd_diffusion_frames_total", "Video frames received from players (in) and sent back (out)",
                 ["backend", "direction"])
INPUTS_DROPPED = Counter("sd_diffusion_inputs_dropped_total",
                         "Input frames replaced in the one-slot buffer before the model took them", ["backend"])
OUTPUTS_DROPPED = Counter("sd_diffusion_outputs_dropped_total",
                          "Generated frames replaced before the sender took them", ["backend"])
FRAME_AGE_SECONDS = Histogram("sd_diffusion_frame_age_seconds",
                              "Input frame arrival to the output made from it being sent",
                              ["backend"], buckets=FRAME_BUCKETS_S)
STAGE_SECONDS = Histogram("sd_diffusion_stage_seconds",
                          "Time per frame in each stage of the media path (sd_diffusion.stream.STAGES) and in "
                          "the backend's own parts (model.vae_encode, model.denoise, model.vae_decode)",
                          ["backend", "stage"], buckets=FRAME_BUCKETS_S)
STREAMS_ACTIVE = Gauge("sd_diffusion_streams_active", "Streams holding a slot")
PEER_CONNECTIONS = Gauge("sd_diffusion_peer_connections", "WebRTC peer connections open")
STREAMS_CLOSED = Counter("sd_diffusion_streams_closed_total", "Streams closed, by why", ["reason"])
BUSY = Counter("sd_diffusion_busy_total", "CreateStream calls answered busy (no free slot)")
GPU_MEMORY_BYTES = Gauge("sd_diffusion_gpu_memory_bytes", "GPU memory allocated by torch on the backend's device")
