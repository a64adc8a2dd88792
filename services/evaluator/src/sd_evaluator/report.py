"""The evaluation report of one result file: JSON, Markdown and plots, always naming what was driven.

`python -m sd_evaluator.report RESULTS.json --routes ROUTES.xml --out DIR` writes report.json,
report.md, ds_per_route.png and infractions_per_km.png into DIR; `--metric-dir` (Bench2Drive's
`<save_name>/metric_info.json` folders) adds its comfort metric.

`build_comparison` / `write_comparison` put several agents' results on one route file side by side (the
evaluation process's report): the trained model never appears without its baselines.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sd_evaluator.agents import AGENT_NAMES, CONSTANT, MODEL
from sd_evaluator.comfort import ComfortError, read_metric_info, route_comfort
from sd_evaluator.results import Results, read_results, route_number
from sd_evaluator.route_file import RouteFile, RouteFileError, read_route_file
from sd_evaluator.scoring import (
    LABELS,
    VALUE_INFRACTION_KEYS,
    Protocol,
    bench2drive_scores,
    global_statistics,
    rescore_record,
)

# Metrics whose inputs a result file does not hold; the report says so instead of a number.
NOT_FROM_RESULT_FILE = {
    "bench2drive_comfort": "needs each route's per-tick ego acceleration, angular velocity and heading "
    "(Bench2Drive's <save_name>/metric_info.json, written by its CARLA agent wrapper; pass its folder)",
    "bench2drive_ability": "needs each route's scenario type (from the route file) and, for Traffic_Signs, "
    "where the route enters its first junction on the CARLA map (a CARLA map query)",
}
PLOTS = ("ds_per_route.png", "infractions_per_km.png")


def build_report(
    results: Results,
    route_file: RouteFile,
    protocol: Protocol = Protocol.LEADERBOARD_2_0,
    expected_routes: int | None = None,
    results_name: str = "",
    metric_dir: Path | None = None,
) -> dict[str, Any]:
    """The report's content: what was driven (route file, towns, count, km), scores, routes."""
    total_routes = results.total_routes or len(route_file.routes)
    stats = global_statistics(results.records, total_routes)
    routes = []
    towns_driven = set()
    for r in results.records:
        route_key = str(route_number(r.route_id)[0])
        try:
            town = route_file.town_of(route_key)
        except RouteFileError as exc:
            raise RouteFileError(
                f"{results_name or 'results'}: record {r.route_id} is not a route of {exc}"
            ) from exc
        towns_driven.add(town)
        rescored = rescore_record(r, protocol)
        routes.append(
            {
                "route_id": r.route_id,
                "town": town,
                "status": r.status,
                "route_length_m": r.route_length_m,
                "score_route": r.scores["score_route"],
                "score_penalty": r.scores["score_penalty"],
                "score_composed": r.scores["score_composed"],
                "scores_match_messages": rescored["score_penalty"] == r.scores["score_penalty"]
                and rescored["score_composed"] == r.scores["score_composed"],
                "infractions": {k: len(v) for k, v in r.infractions.items() if v},
            }
        )
    g = stats.global_record
    b2d = bench2drive_scores(results.records, expected_routes or total_routes)
    recorded = results.global_record
    comfort = None
    not_computed = dict(NOT_FROM_RESULT_FILE)
    if metric_dir is not None:
        comfort = _comfort(results, Path(metric_dir))
        not_computed.pop("bench2drive_comfort")
    return {
        "results_file": results_name,
        "route_file": route_file.path,
        "route_file_sha256": route_file.sha256,
        "protocol": protocol.value,
        "towns": list(route_file.towns),
        "towns_driven": sorted(towns_driven),
        "route_count": len(route_file.routes),
        "routes_in_run": total_routes,
        "routes_evaluated": len(results.records),
        "km_driven": round(stats.km_driven, 3),
        "km_planned_evaluated": round(sum(r.route_length_m for r in results.records) / 1000, 3),
        "entry_status": results.entry_status,
        "leaderboard": {
            "status": g.status,
            "driving_score": g.scores_mean["score_composed"],
            "route_completion": g.scores_mean["score_route"],
            "infraction_penalty": g.scores_mean["score_penalty"],
            "scores_std_dev": g.scores_std_dev,
            "infractions_per_km": {k: g.infractions[k] for k in VALUE_INFRACTION_KEYS},
            "outside_route_lanes_km": g.infractions["outside_route_lanes"],
            "values_match_file": recorded is not None and results.values == stats.values,
        },
        "bench2drive": {
            **{k: v for k, v in asdict(b2d).items() if k != "success_route_ids"},
            "success_route_ids": list(b2d.success_route_ids),
            "comfort": comfort,
            "ability": None,
        },
        "not_computed": not_computed,
        "routes": routes,
        "plots": list(PLOTS),
    }


def _comfort(results: Results, metric_dir: Path) -> float:
    """Mean comfort over the run's routes, from each record's `save_name` folder under metric_dir."""
    per_route = []
    for r in results.records:
        if "save_name" not in r.extra:
            raise ComfortError(f"{r.route_id}: no save_name in its record, so no metric_info.json to read")
        per_route.append(
            route_comfort(read_metric_info(metric_dir / str(r.extra["save_name"]) / "metric_info.json"))
        )
    if not per_route:
        raise ComfortError("no route records to compute comfort for")
    return sum(per_route) / len(per_route)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, its first lines naming the route file, towns, route count and km driven."""
    lb, b2d = report["leaderboard"], report["bench2drive"]
    comfort = "not computed" if b2d["comfort"] is None else f"{b2d['comfort']:.3f}"
    eff = (
        "n/a (no minimum-speed checkpoints recorded)"
        if b2d["efficiency_pct"] is None
        else f"{b2d['efficiency_pct']:.2f}%"
    )
    lines = [
        "# Evaluation report",
        "",
        f"- Route file: `{report['route_file']}` (sha256 {report['route_file_sha256'][:12]}), "
        f"{report['route_count']} routes",
        f"- Towns: {', '.join(report['towns'])} (driven: {', '.join(report['towns_driven']) or 'none'})",
        f"- Routes: {report['routes_evaluated']} evaluated of {report['routes_in_run']} in the run",
        f"- Km driven: {report['km_driven']:.3f} "
        f"(of {report['km_planned_evaluated']:.3f} km planned on the evaluated routes)",
        f"- Results: `{report['results_file']}`, entry status {report['entry_status']}, "
        f"scored as {report['protocol']}",
        "",
        "## Leaderboard 2.0 (means over the run's routes; a missing route counts 0)",
        "",
        "| DS | RC | IP | status |",
        "|---:|---:|---:|---|",
        f"| {lb['driving_score']:.3f} | {lb['route_completion']:.3f} | {lb['infraction_penalty']:.4f} "
        f"| {lb['status']} |",
        "",
        "| infraction | per km |",
        "|---|---:|",
    ]
    labels = dict(zip(VALUE_INFRACTION_KEYS, LABELS[3:]))
    for key, value in lb["infractions_per_km"].items():
        suffix = " (km outside, not per km)" if key == "outside_route_lanes" else ""
        lines.append(f"| {labels[key]}{suffix} | {value:.3f} |")
    lines += [
        "",
        f"## Bench2Drive (over {b2d['expected_routes']} routes; a missing route counts 0)",
        "",
        "| DS | success rate | efficiency | comfort |",
        "|---:|---:|---:|---|",
        f"| {b2d['driving_score']:.3f} | {100 * b2d['success_rate']:.2f}% | {eff} | {comfort} |",
        "",
        "Not computed:",
        "",
    ]
    lines += [f"- {name}: {why}" for name, why in report["not_computed"].items()]
    lines += [
        "",
        "## Routes",
        "",
        "| route | town | status | length m | RC | IP | DS | infractions |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in report["routes"]:
        infractions = ", ".join(f"{k} {n}" for k, n in r["infractions"].items()) or "none"
        lines.append(
            f"| {r['route_id']} | {r['town']} | {r['status']} | {r['route_length_m']:.1f} "
            f"| {r['score_route']:.2f} "
            f"| {r['score_penalty']:.3f} | {r['score_composed']:.2f} | {infractions} |"
        )
    lines += ["", *[f"![{p}]({p})" for p in report["plots"]], ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Writes report.json, report.md and the plots into out_dir; returns the paths written."""
    import matplotlib  # imported here: only a report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    written[0].write_text(json.dumps(report, indent=2))
    written[1].write_text(render_markdown(report))
    subtitle = (
        f"{Path(report['route_file']).name}: {report['routes_evaluated']}/{report['routes_in_run']} routes, "
        f"{', '.join(report['towns_driven'])}, {report['km_driven']:.2f} km driven"
    )

    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(report["routes"])), 4))
    ids = [r["route_id"].replace("RouteScenario_", "") for r in report["routes"]]
    ax.bar(ids, [r["score_composed"] for r in report["routes"]], label="DS")
    ax.plot(ids, [r["score_route"] for r in report["routes"]], "k_", markersize=14, label="RC")
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (%)")
    ax.set_title(f"Driving score per route\n{subtitle}", fontsize=9)
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=100)
    plt.close(fig)

    per_km = report["leaderboard"]["infractions_per_km"]
    keys = [k for k in VALUE_INFRACTION_KEYS if k != "outside_route_lanes"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(keys, [per_km[k] for k in keys])
    ax.set_xlabel("infractions per km driven")
    ax.set_title(f"Infractions per km\n{subtitle}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=100)
    plt.close(fig)
    return written + [out / p for p in PLOTS]


COMPARISON_PLOTS = ("ds_per_route_per_agent.png",)


class ComparisonError(ValueError):
    """Agents' results that cannot be compared: no agents, the model without its baselines, or runs of
    different lengths."""


def _agent_order(names) -> list[str]:
    return sorted(names, key=lambda n: (AGENT_NAMES.index(n) if n in AGENT_NAMES else len(AGENT_NAMES), n))


def build_comparison(
    agent_results: dict[str, Results],
    route_file: RouteFile,
    protocol: Protocol = Protocol.LEADERBOARD_2_0,
    expected_routes: int | None = None,
    baselines_required: tuple[str, ...] = (CONSTANT,),
) -> dict[str, Any]:
    """Several agents' scores on the same route file, side by side: what was driven, each agent's DS, RC,
    IP, infractions per km, km driven and Bench2Drive DS / success / efficiency, and DS per route."""
    if not agent_results:
        raise ComparisonError("no agent results to compare")
    missing = [b for b in baselines_required if b not in agent_results]
    if MODEL in agent_results and missing:
        raise ComparisonError(f"the model's results need its baselines beside them; missing: {', '.join(missing)}")
    agents = _agent_order(agent_results)
    reports = {
        a: build_report(agent_results[a], route_file, protocol, expected_routes, f"{a}/results.json")
        for a in agents
    }
    in_run = {a: r["routes_in_run"] for a, r in reports.items()}
    if len(set(in_run.values())) != 1:
        raise ComparisonError(f"the agents' runs have different route counts: {in_run}")
    scores = {}
    for a, r in reports.items():
        lb, b2d = r["leaderboard"], r["bench2drive"]
        per_km = lb["infractions_per_km"]
        scores[a] = {
            "driving_score": lb["driving_score"],
            "route_completion": lb["route_completion"],
            "infraction_penalty": lb["infraction_penalty"],
            "status": lb["status"],
            "entry_status": r["entry_status"],
            "routes_evaluated": r["routes_evaluated"],
            "km_driven": r["km_driven"],
            # every infraction that is a count (outside-lanes is a distance, reported on its own)
            "infractions_per_km_total": round(sum(v for k, v in per_km.items() if k != "outside_route_lanes"), 3),
            "infractions_per_km": per_km,
            "outside_route_lanes_km": lb["outside_route_lanes_km"],
            "bench2drive_driving_score": b2d["driving_score"],
            "bench2drive_success_rate": b2d["success_rate"],
            "bench2drive_efficiency_pct": b2d["efficiency_pct"],
        }
    per_route: dict[str, dict[str, Any]] = {}
    for a, r in reports.items():
        for route in r["routes"]:
            row = per_route.setdefault(
                route["route_id"],
                {"route_id": route["route_id"], "town": route["town"], "route_length_m": route["route_length_m"],
                 "driving_score": {}, "route_completion": {}, "status": {}},
            )
            row["driving_score"][a] = route["score_composed"]
            row["route_completion"][a] = route["score_route"]
            row["status"][a] = route["status"]
    routes = [per_route[k] for k in sorted(per_route, key=lambda rid: route_number(rid))]
    for row in routes:  # an agent with no record of a route: it counts 0 in the means, shown as None here
        for key in ("driving_score", "route_completion", "status"):
            row[key] = {a: row[key].get(a) for a in agents}
    first = reports[agents[0]]
    return {
        "route_file": route_file.path,
        "route_file_sha256": route_file.sha256,
        "protocol": protocol.value,
        "towns": list(route_file.towns),
        "towns_driven": sorted({t for r in reports.values() for t in r["towns_driven"]}),
        "route_count": len(route_file.routes),
        "routes_in_run": first["routes_in_run"],
        "expected_routes": first["bench2drive"]["expected_routes"],
        "agents": agents,
        "km_driven": {a: scores[a]["km_driven"] for a in agents},
        "scores": scores,
        "routes": routes,
        "agent_reports": {a: f"{a}/report.json" for a in agents},
        "plots": list(COMPARISON_PLOTS),
    }


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def render_comparison_markdown(comparison: dict[str, Any]) -> str:
    """The side-by-side report as Markdown, its first lines naming route file, towns, route count and km."""
    c, agents = comparison, comparison["agents"]
    km = ", ".join(f"{a} {c['km_driven'][a]:.3f}" for a in agents)
    lines = [
        "# Evaluation report: " + ", ".join(agents),
        "",
        f"- Route file: `{c['route_file']}` (sha256 {c['route_file_sha256'][:12]}), {c['route_count']} routes",
        f"- Towns: {', '.join(c['towns'])} (driven: {', '.join(c['towns_driven']) or 'none'})",
        f"- Routes in the run: {c['routes_in_run']}, every agent on the same routes",
        f"- Km driven: {km}",
        f"- Scored as {c['protocol']}; Bench2Drive over {c['expected_routes']} routes",
        "",
        "## Agents side by side (means over the run's routes; a missing route counts 0)",
        "",
        "| agent | DS | RC | IP | infractions/km | km driven | routes | B2D DS | B2D success | B2D efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in agents:
        s = c["scores"][a]
        eff = "n/a" if s["bench2drive_efficiency_pct"] is None else f"{s['bench2drive_efficiency_pct']:.2f}%"
        lines.append(
            f"| {a} | {s['driving_score']:.3f} | {s['route_completion']:.3f} | {s['infraction_penalty']:.4f} "
            f"| {s['infractions_per_km_total']:.3f} | {s['km_driven']:.3f} | {s['routes_evaluated']} "
            f"| {s['bench2drive_driving_score']:.3f} | {100 * s['bench2drive_success_rate']:.2f}% | {eff} |"
        )
    labels = dict(zip(VALUE_INFRACTION_KEYS, LABELS[3:]))
    lines += ["", "## Infractions per km driven", "", "| infraction | " + " | ".join(agents) + " |",
              "|---|" + "---:|" * len(agents)]
    for key in VALUE_INFRACTION_KEYS:
        suffix = " (km outside, not per km)" if key == "outside_route_lanes" else ""
        lines.append(f"| {labels[key]}{suffix} | "
                     + " | ".join(f"{c['scores'][a]['infractions_per_km'][key]:.3f}" for a in agents) + " |")
    lines += ["", "## Driving score per route", "", "| route | town | length m | " + " | ".join(agents) + " |",
              "|---|---|---:|" + "---:|" * len(agents)]
    for r in c["routes"]:
        lines.append(f"| {r['route_id']} | {r['town']} | {r['route_length_m']:.1f} | "
                     + " | ".join(_cell(r["driving_score"][a], ".2f") for a in agents) + " |")
    lines += ["", "Each agent's own report: " + ", ".join(f"[{a}]({p})" for a, p in c["agent_reports"].items()),
              "", *[f"![{p}]({p})" for p in c["plots"]], ""]
    return "\n".join(lines)


def write_comparison(comparison: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Writes report.json, report.md and the DS-per-route-per-agent plot into out_dir; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md", out / COMPARISON_PLOTS[0]]
    written[0].write_text(json.dumps(comparison, indent=2))
    written[1].write_text(render_comparison_markdown(comparison))
    agents, routes = comparison["agents"], comparison["routes"]
    km = ", ".join(f"{a} {comparison['km_driven'][a]:.2f} km" for a in agents)
    width = 0.8 / max(1, len(agents))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(routes) * len(agents)), 4))
    xs = range(len(routes))
    for i, a in enumerate(agents):
        ax.bar([x + (i - (len(agents) - 1) / 2) * width for x in xs],
               [r["driving_score"][a] or 0.0 for r in routes], width, label=a)
    ax.set_xticks(list(xs), [r["route_id"].replace("RouteScenario_", "") for r in routes])
    ax.set_ylim(0, 100)
    ax.set_ylabel("driving score (%)")
    ax.set_title(f"Driving score per route and agent\n{Path(comparison['route_file']).name}: "
                 f"{comparison['routes_in_run']} routes, {', '.join(comparison['towns_driven'])}; {km}", fontsize=9)
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(written[2], dpi=100)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line: a report from a result file and the route file it ran."""
    parser = argparse.ArgumentParser(description="Report of a CARLA Leaderboard 2.0 result file")
    parser.add_argument("results", type=Path)
    parser.add_argument("--routes", type=Path, required=True, help="the route file the run drove")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--protocol", choices=[p.value for p in Protocol], default=Protocol.LEADERBOARD_2_0.value
    )
    parser.add_argument(
        "--metric-dir",
        type=Path,
        default=None,
        help="Bench2Drive's folder of <save_name>/metric_info.json, for its comfort metric",
    )
    parser.add_argument(
        "--expected-routes",
        type=int,
        default=None,
        help="routes a full benchmark has (Bench2Drive: 220); default: the run's route count",
    )
    args = parser.parse_args(argv)
    report = build_report(
        read_results(args.results),
        read_route_file(args.routes),
        Protocol(args.protocol),
        args.expected_routes,
        str(args.results),
        args.metric_dir,
    )
    for path in write_report(report, args.out):
        print(path)


if __name__ == "__main__":
    main()
