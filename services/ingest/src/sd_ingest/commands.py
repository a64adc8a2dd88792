"""`sdctl dataset create|list|show`, `sdctl catalog list|show|reprocess` and `sdctl rewards …`
(rewards_commands.py): the ingest's API from a shell.

`sdctl catalog reprocess --all` (or a selector) is the exception: it works on the catalog's database
itself (reprocessing.py), in N worker processes or as one shard of an Indexed Job, and the ingest's
pipeline then processes what it sends back the normal way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from sd_common.cli.grpc_client import add_target_arguments, call_service, message_dict, target_of
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc

STATES = ["RECEIVING", "COMPLETE", "VALIDATED", "REJECTED", "PROCESSING", "PROCESSED", "FAILED"]


def _target(a: argparse.Namespace) -> str:
    return target_of(a, "ingest")


def _call(a: argparse.Namespace, fn: Callable[[ingest_pb2_grpc.IngestServiceStub], object]) -> object | None:
    return call_service("ingest", _target(a), ingest_pb2_grpc.IngestServiceStub, fn)


def _print_dataset(d: dict) -> None:
    print(f"{d['dataset_id']}  {d['name']}\n"
          f"  created {d['created_at']}; {float(d['hours']):.4f} h, {d['segments']} segments "
          f"({d['train_segments']} train / {d['val_segments']} val), {d['sessions']} sessions, "
          f"{d['players']} players, {d['frames']} frames\n"
          f"  manifest {d['manifest_uri']}\n  lerobot  {d['lerobot_uri']}")


def _dataset_create(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.CreateDataset(pb.CreateDatasetRequest(
        name=a.name, val_fraction=a.val_fraction, split_seed=a.seed), timeout=a.timeout))
    if r is None:
        return 1
    d = message_dict(r.dataset)
    if a.json:
        print(json.dumps({"created": r.created, "dataset": d}, indent=1))
    else:
        print("created" if r.created else "unchanged: the same content already has this version")
        _print_dataset(d)
    return 0


def _dataset_list(a: argparse.Namespace) -> int:
    datasets, token = [], ""
    while True:
        r = _call(a, lambda s, t=token: s.ListDatasets(pb.ListDatasetsRequest(page_size=200, page_token=t),
                                                         timeout=30))
        if r is None:
            return 1
        datasets += [message_dict(d) for d in r.datasets]
        token = r.next_page_token
        if not token:
            break
    if a.json:
        print(json.dumps(datasets, indent=1))
    else:
        for d in datasets:
            _print_dataset(d)
        if not datasets:
            print("no dataset versions yet (sdctl dataset create)")
    return 0


def _dataset_show(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.GetDataset(pb.GetDatasetRequest(dataset_id=a.dataset_id), timeout=30))
    if r is None:
        return 1
    print(json.dumps(message_dict(r.dataset), indent=1)) if a.json else _print_dataset(message_dict(r.dataset))
    return 0


def _catalog_list(a: argparse.Namespace) -> int:
    state = pb.CatalogState.Value(f"CATALOG_STATE_{a.state}") if a.state else 0
    sessions, token = [], ""
    while True:
        r = _call(a, lambda s, t=token: s.ListCatalogSessions(pb.ListCatalogSessionsRequest(
            page_size=500, page_token=t, catalog_state=state), timeout=30))
        if r is None:
            return 1
        sessions += [message_dict(x) for x in r.sessions]
        token = r.next_page_token
        if not token:
            break
    if a.json:
        print(json.dumps(sessions, indent=1))
    else:
        for x in sessions:
            st = x["catalog_state"].removeprefix("CATALOG_STATE_")
            print(f"{x['session_id']:<40} {st:<11} attempts={x['attempts']} segments={x['segments_accepted']}"
                  f"+{x['segments_rejected']} player={x['player_id'] or '-'}"
                  + (f" error={x['last_error'][:80]!r}" if x["last_error"] else ""))
    return 0


def _catalog_show(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.GetSessionStatus(pb.GetSessionStatusRequest(session_id=a.session_id), timeout=30))
    if r is None:
        return 1
    print(json.dumps(message_dict(r.session), indent=1))
    return 0


_SELECTOR_FLAGS = ("processor_version", "since", "until", "processed_since", "processed_until", "state")


def _catalog_reprocess(a: argparse.Namespace) -> int:
    bulk = a.all or any(getattr(a, f) for f in _SELECTOR_FLAGS)
    if bulk == bool(a.session_id):
        print("give either a SESSION_ID or --all / a selector (--processor-version, --since, --until, ...)",
              file=sys.stderr)
        return 2
    if bulk:
        return _reprocess_corpus(a)
    r = _call(a, lambda s: s.ReprocessSession(pb.ReprocessSessionRequest(session_id=a.session_id), timeout=30))
    if r is None:
        return 1
    print(json.dumps(message_dict(r.session), indent=1))
    return 0


def _shard_worker(url: str, selector, shard: int, shards: int, run_id: str, window: int, wait: bool,
                  poll_s: float, timeout_s: float | None, dry_run: bool, log_level: str,
                  log_format: str) -> dict:
    """One shard in a worker process: its own catalog connection, its report as a dict."""
    from sd_common.logs import configure_logging
    from sd_ingest.catalog import Catalog
    from sd_ingest.reprocessing import run_shard
    configure_logging("sdctl", log_format, level=log_level)  # on stderr: stdout carries the report
    catalog = Catalog(url)
    try:
        report = run_shard(catalog, selector, shard=shard, shards=shards, run_id=run_id, window=window, wait=wait,
                           poll_s=poll_s, timeout_s=timeout_s, dry_run=dry_run).to_dict()
        return {**report, "pid": os.getpid()}
    finally:
        catalog.close()


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


def _reprocess_corpus(a: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from sd_common.logs import configure_logging
    from sd_ingest.catalog import Catalog, SessionState
    from sd_ingest.reprocessing import DEFAULT_STATES, Selector, SelectorError, check_run, parse_time
    from sd_ingest.settings import IngestSettings

    log_level = "INFO" if a.verbose else "WARNING"
    configure_logging("sdctl", a.log_format, level=log_level)
    try:
        selector = Selector(
            states=tuple(SessionState(x) for x in a.state) if a.state else DEFAULT_STATES,
            processor_version=a.processor_version,
            received_since=parse_time(a.since) if a.since else None,
            received_until=parse_time(a.until) if a.until else None,
            processed_since=parse_time(a.processed_since) if a.processed_since else None,
            processed_until=parse_time(a.processed_until) if a.processed_until else None)
        if (a.shards is not None and a.shards < 1) or (a.workers is not None and a.workers < 1):
            raise SelectorError("--shards and --workers must be at least 1")
        shards = a.shards or a.workers or 1
        if a.shard is not None and a.workers:
            raise SelectorError("--shard runs one shard in this process; --workers runs every shard of --shards")
        run_id = a.run_id if a.run_id is not None else selector.default_run_id()
        check_run(a.shard if a.shard is not None else 0, shards, a.window, run_id)
    except SelectorError as exc:
        print(f"sdctl catalog reprocess: {exc}", file=sys.stderr)
        return 2
    url = a.database_url or IngestSettings().sqlalchemy_url()
    try:
        Catalog(url).close()  # brings the schema up to date once, before workers open it side by side
    except SQLAlchemyError as exc:
        print(f"sdctl catalog reprocess: cannot open the catalog at {_safe_url(url)}: {exc}", file=sys.stderr)
        return 1
    todo = [a.shard] if a.shard is not None else list(range(shards))
    args = [(url, selector, k, shards, run_id, a.window, not a.no_wait, a.poll_s, a.timeout_s, a.dry_run, log_level,
             a.log_format)
            for k in todo]
    if a.workers and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(a.workers, len(todo)), mp_context=get_context("spawn")) as pool:
            reports = list(pool.map(_shard_worker, *zip(*args)))
    else:
        reports = [_shard_worker(*x) for x in args]
    totals = {k: sum(r[k] for r in reports) for k in ("selected", "sent", "already", "busy", "processed",
                                                       "failed", "rejected", "pending", "superseded")}
    if a.json:
        print(json.dumps({"run_id": run_id, "selector": selector.describe(), "dry_run": a.dry_run,
                          "shards": reports, "total": totals}, indent=1))
    else:
        print(f"run {run_id}{' (dry run)' if a.dry_run else ''}: {json.dumps(selector.describe())}")
        for r in [*reports, {"shard": "all", "shards": shards, **totals}]:
            line = (f"shard {r['shard']}/{r['shards']}: selected={r['selected']} sent={r['sent']} "
                    f"already={r['already']} busy={r['busy']} processed={r['processed']} failed={r['failed']} "
                    f"rejected={r['rejected']} pending={r['pending']}"
                    + (f" superseded={r['superseded']}" if r["superseded"] else ""))
            if a.dry_run and r["shard"] != "all":
                line += f" would_send={len(r['session_ids'])}"
            print(line)
    return 3 if totals["pending"] and not a.no_wait and not a.dry_run else 0


def _common(p: argparse.ArgumentParser) -> None:
    add_target_arguments(p, "ingest")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``dataset``, ``catalog`` and ``rewards`` to sdctl's argument parser (handler in ``fn``)."""
    dataset = subparsers.add_parser("dataset", help="dataset versions of the accepted segments (ingest)")
    dsub = dataset.add_subparsers(dest="action", required=True)
    create = dsub.add_parser("create", help="snapshot every accepted segment into a new dataset version")
    create.add_argument("--name", default="", help="a label for the version (not part of its id)")
    create.add_argument("--val-fraction", type=float, default=0.1, help="share of sessions for validation")
    create.add_argument("--seed", type=int, default=0, help="split seed: the same seed gives the same split")
    create.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the snapshot")
    _common(create)
    create.set_defaults(fn=_dataset_create)
    lst = dsub.add_parser("list", help="list dataset versions, newest first")
    _common(lst)
    lst.set_defaults(fn=_dataset_list)
    show = dsub.add_parser("show", help="show one dataset version")
    show.add_argument("dataset_id")
    _common(show)
    show.set_defaults(fn=_dataset_show)

    catalog = subparsers.add_parser("catalog", help="sessions as the ingest sees them (operators)")
    csub = catalog.add_subparsers(dest="action", required=True)
    clist = csub.add_parser("list", help="every session in the catalog")
    clist.add_argument("--state", choices=STATES, help="only sessions in this state")
    _common(clist)
    clist.set_defaults(fn=_catalog_list)
    cshow = csub.add_parser("show", help="one session: state, problems, attempts, segments")
    cshow.add_argument("session_id")
    _common(cshow)
    cshow.set_defaults(fn=_catalog_show)
    crep = csub.add_parser(
        "reprocess", help="dispatch a processed or failed session again, or every session a selector picks",
        description="SESSION_ID: one session, through the ingest's API. --all or a selector: every selected "
                    "session, shard by shard, on the catalog's database (SD_INGEST_DATABASE_URL); the ingest's "
                    "pipeline processes what is sent back. A run (--run-id) sends each session once: running "
                    "it again changes nothing.")
    crep.add_argument("session_id", nargs="?")
    crep.add_argument("--all", action="store_true", help="every session in the selected states")
    crep.add_argument("--state", action="append", choices=["PROCESSED", "FAILED", "REJECTED"],
                      help="select sessions in this state (repeatable; default PROCESSED and FAILED)")
    crep.add_argument("--processor-version", help="only sessions whose last processing names this processor version")
    crep.add_argument("--since", help="only sessions received at or after this ISO 8601 time (UTC)")
    crep.add_argument("--until", help="only sessions received before this time")
    crep.add_argument("--processed-since", help="only sessions last processed at or after this time")
    crep.add_argument("--processed-until", help="only sessions last processed before this time")
    crep.add_argument("--run-id", help="names the run (default: derived from the selector); a new id redoes "
                                       "sessions an earlier run with the same selector sent")
    crep.add_argument("--shard", type=int, help="run only this shard (0-based), e.g. $JOB_COMPLETION_INDEX")
    crep.add_argument("--shards", type=int, help="how many shards the selection is cut into (default --workers, or 1)")
    crep.add_argument("--workers", type=int, help="run every shard here, in this many worker processes")
    crep.add_argument("--window", type=int, default=4,
                      help="sessions of one shard unfinished at once (default 4)")
    crep.add_argument("--no-wait", action="store_true", help="send the shard's sessions back without waiting")
    crep.add_argument("--poll-s", type=float, default=1.0, help="seconds between looks at the sessions sent")
    crep.add_argument("--timeout-s", type=float, help="stop waiting after this long (exit 3 if some are pending)")
    crep.add_argument("--dry-run", action="store_true", help="count and list what would be sent; change nothing")
    crep.add_argument("--database-url", help="the catalog's SQLAlchemy URL (default: the ingest's settings)")
    crep.add_argument("-v", "--verbose", action="store_true", help="log each session sent back")
    crep.add_argument("--log-format", choices=["console", "json"], default="console", help="logs (on stderr)")
    _common(crep)
    crep.set_defaults(fn=_catalog_reprocess)

    from sd_ingest.rewards_commands import register as register_rewards

    register_rewards(subparsers)
