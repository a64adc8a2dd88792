"""Generates the Python stubs for protos/ into this package's source tree (run by the build)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc
import grpc_tools


def proto_files(proto_root: Path) -> list[Path]:
    """Every .proto under the root, sorted for a reproducible build."""
    return sorted(proto_root.rglob("*.proto"))


def generate(proto_root: Path, out_dir: Path) -> None:
    """Runs protoc with the gRPC plugin; raises RuntimeError naming the failing file."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in proto_files(proto_root):
        rel = proto.relative_to(proto_root)
        args = [
            "protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(rel),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {rel}")
    # Regular packages (not namespace ones) so editable installs and images import them alike.
    for d in [out_dir / "scale_diffusion", *(out_dir / "scale_diffusion").rglob("*")]:
        if d.is_dir() and d.name != "__pycache__":
            (d / "__init__.py").touch()


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m sd_common.protogen --protos protos --out services/common/src."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--protos", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    generate(a.protos.resolve(), a.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
