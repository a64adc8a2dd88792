"""A leaderboard route file (`<routes><route id town>…`): its routes, towns and scenario types."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


class RouteFileError(ValueError):
    """A route file that cannot be read as the leaderboard's XML; the message names the file and route."""


@dataclass(frozen=True)
class RouteEntry:
    """One `<route>`: its id, town and the types of its scenarios, in file order."""

    route_id: str
    town: str
    scenario_types: tuple[str, ...]


@dataclass(frozen=True)
class RouteFile:
    """The routes of one file, with the file's name and content digest so a report names exactly what ran."""

    path: str
    sha256: str
    routes: tuple[RouteEntry, ...]

    @property
    def towns(self) -> tuple[str, ...]:
        """The towns of the file's routes, sorted."""
        return tuple(sorted({r.town for r in self.routes}))

    def town_of(self, route_id: str) -> str:
        """The town of the route with this id (the number in `RouteScenario_<id>_rep<n>`)."""
        for route in self.routes:
            if route.route_id == route_id:
                return route.town
        raise RouteFileError(f"{self.path}: no route with id {route_id!r}")


def read_route_file(path: str | Path) -> RouteFile:
    """Reads the route ids, towns and scenario types of a leaderboard route file."""
    path = Path(path)
    body = path.read_bytes()
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise RouteFileError(f"{path}: not XML ({exc})") from exc
    if root.tag != "routes":
        raise RouteFileError(f"{path}: the root element is <{root.tag}>, expected <routes>")
    routes = []
    for i, route in enumerate(root.findall("route")):
        route_id, town = route.get("id"), route.get("town")
        if not route_id or not town:
            raise RouteFileError(f"{path}: route #{i} needs both an id and a town attribute")
        types = tuple(s.get("type", "") for s in route.iter("scenario"))
        routes.append(RouteEntry(route_id, town, types))
    if not routes:
        raise RouteFileError(f"{path}: no <route> elements")
    ids = [r.route_id for r in routes]
    if len(set(ids)) != len(ids):
        raise RouteFileError(f"{path}: route ids repeat")
    return RouteFile(str(path), hashlib.sha256(body).hexdigest(), tuple(routes))
