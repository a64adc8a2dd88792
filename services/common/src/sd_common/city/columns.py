"""Which column of an NYC export holds what: the importer's adjustable column mapping.

The importer reads every input field through a *role* (``width_ft``, ``direction``, ``height_roof_ft``
…). Each role has a list of candidate column names; the first candidate the file has is used, and
names match without regard to case (a shapefile's ``TRAFDIR`` and a portal export's ``trafdir`` are
the same column). The defaults cover the LION and CSCL centerline exports and the current and legacy
Building Footprints schemas. A JSON file given with ``--columns`` replaces the candidates of any role
and the code lists; ``sdctl city columns`` prints the defaults in exactly that form.
docs/city-format.md describes every role and code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CityImportError(ValueError):
    """An input the importer cannot use; the message says which file, what is wrong, and what to do."""


class MissingColumnError(CityImportError):
    """A required column is in none of the file's features."""

    def __init__(self, message: str, role: str, candidates: tuple[str, ...]) -> None:
        super().__init__(message)
        self.role = role
        self.candidates = candidates


@dataclass(frozen=True)
class Role:
    """One field the importer reads, the columns it may come from, and whether the import needs it."""

    name: str
    candidates: tuple[str, ...]
    required: bool
    meaning: str


FOOTPRINT_ROLES: tuple[Role, ...] = (
    Role("height_roof_ft", ("height_roof", "heightroof"), True,
         "roof height above ground, in feet (0 or empty: unknown)"),
    Role("ground_elevation_ft", ("ground_elevation", "groundelev"), False,
         "ground elevation at the building's base, in feet (NAVD88)"),
    Role("feature_code", ("feature_code", "feat_code"), False,
         "building type code (2100 building, 5100 under construction, 5110 garage, ...)"),
    Role("bin", ("bin",), False, "Building Identification Number, kept as source_id"),
)

CENTERLINE_ROLES: tuple[Role, ...] = (
    Role("direction", ("trafdir",), True,
         "traffic direction code (with / against the digitizing direction, two-way, not for vehicles)"),
    Role("width_ft", ("streetwidth_min", "st_width", "streetwidth"), True,
         "street width curb to curb, in feet"),
    Role("roadway_type", ("rw_type",), True, "roadway type code (1 street, 2 highway, ... 6 path, ...)"),
    Role("name", ("street", "full_street_name", "full_stree", "stname_label", "stname_lab", "st_label",
                  "st_name"), False, "street name"),
    Role("id", ("segmentid", "physicalid"), False, "segment id, kept as source_id"),
    Role("travel_lanes", ("number_travel_lanes",), False,
         "number of travel lanes, both directions (when absent, lanes follow from the width)"),
    Role("layer", ("rb_layer",), False,
         "roadbed layer (LION: G generic centerline of a divided road, R roadbed, B both)"),
    Role("status", ("status",), False, "construction status code (2 constructed, 3 paper street, ...)"),
    Role("from_level", ("nodelevelf", "frm_lvl_co"), False,
         "vertical level of the segment's first point (bridges and tunnels connect only at their level)"),
    Role("to_level", ("nodelevelt", "to_lvl_co"), False, "vertical level of the segment's last point"),
)

# Code lists, compared after trimming blanks and upper-casing. LION writes W/A/T/P, CSCL FT/TF/TW/NV.
DEFAULT_CODES: dict[str, tuple[str, ...]] = {
    "direction_with": ("W", "FT"),
    "direction_against": ("A", "TF"),
    "direction_two_way": ("T", "TW"),
    "direction_not_vehicular": ("P", "NV"),
    # Roadway types that are not driven: 5 boardwalk, 6 path/trail, 7 step street,
    # 12 non-physical street segment, 14 ferry route.
    "drop_roadway_types": ("5", "6", "7", "12", "14"),
    # Status: 1 planned private, 3 paper street, 4 under construction, 5 demapped, 9 paper street on a
    # boundary. 2 (constructed) and anything else are kept.
    "drop_status": ("1", "3", "4", "5", "9"),
    # LION draws a divided road both as its roadbeds (R) and as one generic centerline (G): keep one.
    "drop_layer": ("G",),
}

ROADWAY_TYPE_NAMES = {
    "1": "street", "2": "highway", "3": "bridge", "4": "tunnel", "5": "boardwalk", "6": "path/trail",
    "7": "step street", "8": "driveway", "9": "ramp", "10": "alley", "11": "unknown",
    "12": "non-physical street segment", "13": "U-turn", "14": "ferry route",
}

SECTIONS = {"footprints": FOOTPRINT_ROLES, "centerlines": CENTERLINE_ROLES}


def normalize_code(value: Any) -> str:
    """A code as compared against the code lists: trimmed, upper-case, integers without leading zeros."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip().upper()
    if text.isdigit():
        text = str(int(text))
    return text


def parse_number(value: Any) -> float | None:
    """A finite number from a string or number property; None for null, blank or unreadable values."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class ColumnMapping:
    """Candidate columns per role (an empty tuple turns an optional role off) and the code lists."""

    footprints: Mapping[str, tuple[str, ...]]
    centerlines: Mapping[str, tuple[str, ...]]
    codes: Mapping[str, frozenset[str]]

    @classmethod
    def default(cls) -> ColumnMapping:
        """The built-in mapping: LION, CSCL, current and legacy footprint names."""
        return cls(
            footprints={r.name: r.candidates for r in FOOTPRINT_ROLES},
            centerlines={r.name: r.candidates for r in CENTERLINE_ROLES},
            codes={k: frozenset(v) for k, v in DEFAULT_CODES.items()},
        )

    @classmethod
    def load(cls, path: Path | str) -> ColumnMapping:
        """The defaults with the overrides of a JSON mapping file applied."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CityImportError(f"{path}: cannot read the column mapping ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise CityImportError(f"{path}: the column mapping is not JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.default().with_overrides(doc, str(path))

    def with_overrides(self, doc: Any, where: str = "column mapping") -> ColumnMapping:
        """A copy with the roles and code lists of ``doc`` (the --columns file's structure) replaced."""
        if not isinstance(doc, dict):
            raise CityImportError(f"{where}: expected a JSON object with 'footprints', 'centerlines' and/or 'codes'")
        unknown = sorted(set(doc) - {*SECTIONS, "codes"})
        if unknown:
            raise CityImportError(f"{where}: unknown section {unknown[0]!r}; use footprints, centerlines, codes")
        sections = {"footprints": dict(self.footprints), "centerlines": dict(self.centerlines)}
        for section, roles in SECTIONS.items():
            entries = doc.get(section, {})
            if not isinstance(entries, dict):
                raise CityImportError(f"{where}: {section!r} must be an object of role: column")
            known = {r.name: r for r in roles}
            for role, columns in entries.items():
                if role not in known:
                    raise CityImportError(
                        f"{where}: {section}.{role} is not a role; the roles are {', '.join(known)}")
                if columns is None:
                    if known[role].required:
                        raise CityImportError(f"{where}: {section}.{role} is required and cannot be turned off")
                    sections[section][role] = ()
                    continue
                if isinstance(columns, str):
                    columns = [columns]
                if not (isinstance(columns, list) and columns and all(isinstance(c, str) and c for c in columns)):
                    raise CityImportError(
                        f"{where}: {section}.{role} must be a column name, a list of names, or null")
                sections[section][role] = tuple(columns)
        codes = dict(self.codes)
        entries = doc.get("codes", {})
        if not isinstance(entries, dict):
            raise CityImportError(f"{where}: 'codes' must be an object of name: [codes]")
        for name, values in entries.items():
            if name not in DEFAULT_CODES:
                raise CityImportError(f"{where}: codes.{name} is unknown; the code lists are {', '.join(DEFAULT_CODES)}")
            if not (isinstance(values, list) and all(isinstance(v, (str, int)) for v in values)):
                raise CityImportError(f"{where}: codes.{name} must be a list of codes")
            codes[name] = frozenset(normalize_code(v) for v in values)
        return ColumnMapping(footprints=sections["footprints"], centerlines=sections["centerlines"], codes=codes)

    def to_dict(self) -> dict[str, Any]:
        """The mapping in the --columns file's structure (what `sdctl city columns` prints)."""
        def roles(section: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
            return {role: list(c) if c else None for role, c in section.items()}
        return {"footprints": roles(self.footprints), "centerlines": roles(self.centerlines),
                "codes": {k: sorted(v, key=lambda c: (len(c), c)) for k, v in self.codes.items()}}


def resolve_columns(section: str, mapping: Mapping[str, tuple[str, ...]], present: Iterable[str],
                    source: str) -> dict[str, str | None]:
    """role -> the column of this file that serves it (None if absent); MissingColumnError for a required one.

    ``present`` is every property name that occurs in the file's features.
    """
    by_lower: dict[str, str] = {}
    for name in present:
        by_lower.setdefault(name.lower(), name)
    resolved: dict[str, str | None] = {}
    for role in SECTIONS[section]:
        candidates = mapping.get(role.name, ())
        resolved[role.name] = next((by_lower[c.lower()] for c in candidates if c.lower() in by_lower), None)
        if resolved[role.name] is None and role.required:
            names = " or ".join(repr(c) for c in candidates)
            columns = ", ".join(sorted(by_lower.values(), key=str.lower)) or "none"
            raise MissingColumnError(
                f"{source}: missing column {names} ({role.meaning}; role {section}.{role.name}). "
                f"Columns in this file: {columns}. If the file names it differently, say so in a "
                f'--columns file: {{"{section}": {{"{role.name}": "THAT_COLUMN"}}}}',
                role.name, tuple(candidates))
    return resolved
