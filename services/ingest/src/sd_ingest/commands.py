"""`sdctl dataset create|list|show`, `sdctl catalog list|show|reprocess` and `sdctl rewards …`
(rewards_commands.py): the ingest's API from a shell."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

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


def _catalog_reprocess(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.ReprocessSession(pb.ReprocessSessionRequest(session_id=a.session_id), timeout=30))
    if r is None:
        return 1
    print(json.dumps(message_dict(r.session), indent=1))
    return 0


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
    crep = csub.add_parser("reprocess", help="dispatch a processed or failed session again")
    crep.add_argument("session_id")
    _common(crep)
    crep.set_defaults(fn=_catalog_reprocess)

    from sd_ingest.rewards_commands import register as register_rewards

    register_rewards(subparsers)
