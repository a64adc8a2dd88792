"""City file format v1 and the NYC Open Data importer.

``format`` holds the model, the JSON Schema (``city-v1.schema.json``), the writer, reader and
validator; ``nyc`` turns Building Footprints and LION/CSCL centerlines into a city; ``projection`` is
the local metric frame; ``streets`` the street graph rules; ``columns`` the adjustable column mapping.
The prose spec is docs/city-format.md. Importing needs only the standard library; validating needs
``jsonschema`` (the ``city`` extra).
"""

from .columns import CityImportError, ColumnMapping, MissingColumnError
from .format import (
    FORMAT,
    SCHEMA_PATH,
    SOLID_KINDS,
    VERSION,
    Building,
    City,
    CitySource,
    Edge,
    Node,
    load_schema,
    read_city,
    validate_city,
    write_city,
)
from .nyc import ImportReport, import_city
from .projection import LocalFrame

__all__ = [
    "FORMAT",
    "SCHEMA_PATH",
    "SOLID_KINDS",
    "VERSION",
    "Building",
    "City",
    "CityImportError",
    "CitySource",
    "ColumnMapping",
    "Edge",
    "ImportReport",
    "LocalFrame",
    "MissingColumnError",
    "Node",
    "import_city",
    "load_schema",
    "read_city",
    "validate_city",
    "write_city",
]
