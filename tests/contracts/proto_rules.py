"""The rules our .proto contracts follow, and the field-number lock that keeps them evolvable.

`python -m tests.contracts.proto_rules --write` records every field number in
protos/field_numbers.lock.json. A locked number may later be removed only by `reserved` (number and
name); it may never be given to another field or type.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
LOCK = PROTOS / "field_numbers.lock.json"
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_TYPE = descriptor_pb2.FieldDescriptorProto


def compile_descriptors(proto_root: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """Every .proto under proto_root, compiled by protoc into descriptors (protoc's own errors raise)."""
    files = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        include = Path(grpc_tools.__file__).parent / "_proto"
        rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--descriptor_set_out={out}", *files])
        if rc != 0:
            raise RuntimeError(f"protoc rejected the contracts in {proto_root} (exit {rc})")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return list(fds.file)


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _messages(fd) -> dict[str, descriptor_pb2.DescriptorProto]:
    out = {}

    def walk(prefix: str, msgs) -> None:
        for m in msgs:
            full = f"{prefix}.{m.name}"
            out[full] = m
            walk(full, m.nested_type)

    walk(fd.package, fd.message_type)
    return out


def _enums(fd):
    yield from fd.enum_type
    for m in _messages(fd).values():
        yield from m.enum_type


def lint(files: list[descriptor_pb2.FileDescriptorProto]) -> list[str]:
    """Style violations: package/path/version naming, service and RPC naming, enums, field names."""
    errors: list[str] = []
    for fd in files:
        parts = fd.name.split("/")
        m = re.match(r"^scale_diffusion\.([a-z_]+)\.(v[1-9][0-9]*)$", fd.package)
        if not m:
            errors.append(f"{fd.name}: package {fd.package!r} must be scale_diffusion.<service>.v<N>")
            continue
        if parts[:-1] != fd.package.split("."):
            errors.append(f"{fd.name}: path must mirror package {fd.package} as {'/'.join(fd.package.split('.'))}/")
        svc_dir = m.group(1)
        if svc_dir != "common" and parts[-1] != f"{svc_dir}.proto":
            errors.append(f"{fd.name}: a service package holds one file named {svc_dir}.proto")
        if svc_dir == "common" and fd.service:
            errors.append(f"{fd.name}: common holds shared messages only, no services")
        msgs = _messages(fd)
        for s in fd.service:
            if not s.name.endswith("Service") or not _PASCAL.match(s.name):
                errors.append(f"{fd.name}: service {s.name} must be PascalCase ending in 'Service'")
            for rpc in s.method:
                for kind, want, got in (("request", f"{rpc.name}Request", rpc.input_type),
                                        ("response", f"{rpc.name}Response", rpc.output_type)):
                    if got != f".{fd.package}.{want}":
                        errors.append(f"{fd.name}: {s.name}.{rpc.name} {kind} must be {want} in this package, "
                                      f"not {got.lstrip('.')}")
        for name, msg in msgs.items():
            if not _PASCAL.match(msg.name):
                errors.append(f"{fd.name}: message {name} must be PascalCase")
            for f in msg.field:
                if not _SNAKE.match(f.name):
                    errors.append(f"{fd.name}: field {name}.{f.name} must be lower_snake_case")
        for e in _enums(fd):
            prefix = _upper_snake(e.name) + "_"
            if not e.value or e.value[0].number != 0 or e.value[0].name != prefix + "UNSPECIFIED":
                errors.append(f"{fd.name}: enum {e.name} must start with {prefix}UNSPECIFIED = 0")
            for v in e.value:
                if not v.name.startswith(prefix):
                    errors.append(f"{fd.name}: enum value {v.name} must be prefixed {prefix}")
    return errors


def field_table(files) -> dict[str, dict[str, str]]:
    """{message: {number: "name:type"}} for every field of every message."""
    table: dict[str, dict[str, str]] = {}
    for fd in files:
        for name, msg in _messages(fd).items():
            if msg.options.map_entry:
                continue
            table[name] = {str(f.number): f"{f.name}:{_TYPE.Type.Name(f.type)}{f.type_name}"
                           for f in msg.field}
    return table


def reserved(files) -> dict[str, tuple[set[int], set[str]]]:
    """{message: (reserved numbers, reserved names)}."""
    out = {}
    for fd in files:
        for name, msg in _messages(fd).items():
            nums = {n for r in msg.reserved_range for n in range(r.start, r.end)}
            out[name] = (nums, set(msg.reserved_name))
    return out


def breaking_changes(lock: dict[str, dict[str, str]], files) -> list[str]:
    """Locked field numbers that were reused, retyped, or removed without being reserved."""
    now, res = field_table(files), reserved(files)
    errors = []
    for msg, fields in sorted(lock.items()):
        for number, spec in sorted(fields.items(), key=lambda kv: int(kv[0])):
            name = spec.split(":", 1)[0]
            current = now.get(msg, {}).get(number)
            if current == spec:
                continue
            nums, names = res.get(msg, (set(), set()))
            if current is None and msg not in now:
                errors.append(f"{msg} was removed; keep the message or move to a new package version")
                break
            if current is None:
                if int(number) not in nums or name not in names:
                    errors.append(f"{msg}: field {number} ({name}) was removed without "
                                  f"`reserved {number};` and `reserved \"{name}\";`")
            else:
                errors.append(f"{msg}: field {number} was {spec}, now {current}; a number is never reused "
                              "or retyped — add a new field instead")
    return errors


def unlocked(lock, files) -> list[str]:
    """Fields present in the contracts but not yet recorded in the lock."""
    now = field_table(files)
    return [f"{m}.{spec.split(':')[0]} = {n}" for m, fields in sorted(now.items())
            for n, spec in fields.items() if lock.get(m, {}).get(n) != spec]


def main(argv: list[str] | None = None) -> int:
    """--write: refresh the lock (refuses while breaking changes exist)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true")
    a = p.parse_args(argv)
    files = compile_descriptors(PROTOS)
    problems = lint(files)
    lock = json.loads(LOCK.read_text()) if LOCK.exists() else {}
    problems += breaking_changes(lock, files)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if a.write:
        merged = {**lock, **field_table(files)}
        LOCK.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
        print(f"locked {sum(len(v) for v in merged.values())} fields in {LOCK.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
