"""Agent-mode step cost in headless Chromium: no frame vs a PNG frame vs a JPEG frame, in one process.

    python bench/city_agent_bench.py --steps 200 --size 320x180 --rounds 2

Each case drives the same route from the same seed with the same controls (3 ticks per step, as the
city benchmarks run), so the cases differ only in the frame the page renders, encodes and returns and
the evaluator decodes. Reports ms per step (page round trip and Python decode apart), frame bytes, and
the ratios to the no-frame case.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sd_evaluator.city.benchmarks import city_benchmark
from sd_evaluator.city.browser import GamePage, PageConfig, decode_frame


def run_case(page: GamePage, options: dict, steps: int, render: bool | str) -> dict:
    page.reset(options)
    step_s, decode_s, sizes = [], [], []
    for i in range(steps):
        action = {"steer": 0.0, "throttle": 0.4 if i % 40 < 30 else 0.0, "brake": 0.0 if i % 40 < 30 else 0.6}
        t0 = time.perf_counter()
        state = page.step(action, 3, render)
        t1 = time.perf_counter()
        if render:
            frame = decode_frame(state["frame_b64"])
            decode_s.append(time.perf_counter() - t1)
            sizes.append(len(state["frame_b64"]) * 3 // 4)
            assert frame.ndim == 3 and frame.shape[2] == 3
        step_s.append(t1 - t0)
    return {
        "step_ms": 1000 * statistics.median(step_s),
        "decode_ms": 1000 * statistics.median(decode_s) if decode_s else 0.0,
        "frame_kb": statistics.median(sizes) / 1024 if sizes else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    bench = city_benchmark("city-smoke")
    options = bench.reset_options(0)
    with GamePage(PageConfig(bench.city, w, h)) as page:
        run_case(page, options, 20, "png")  # warm up: builds the scene, compiles shaders
        for r in range(args.rounds):
            rows = {name: run_case(page, options, args.steps, render)
                    for name, render in (("no frame", False), ("PNG", "png"), ("JPEG q0.95", "jpeg"))}
            base = rows["no frame"]["step_ms"]
            print(f"round {r + 1}, {args.steps} steps at {w}x{h}")
            print("| case | step ms (p50) | decode ms (p50) | frame KiB | step / no frame |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for name, row in rows.items():
                print(f"| {name} | {row['step_ms']:.2f} | {row['decode_ms']:.2f} | {row['frame_kb']:.1f} | "
                      f"{row['step_ms'] / base:.1f}x |")


if __name__ == "__main__":
    main()
