"""Print the GTFS-Realtime schema as proto2 source, rebuilt from the installed bindings' own
descriptor: python proto/render_proto.py > proto/gtfs-realtime.proto. Constructs the schema
does not use (oneofs, groups, maps, services, extensions...) are refused, not approximated."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from typing import Any

from google.protobuf import descriptor_pb2 as pb  # type: ignore[import-untyped]
from google.transit import gtfs_realtime_pb2

FDP = pb.FieldDescriptorProto
MAX = 536870912  # descriptors store "to max" as this exclusive end
IND = "  "
HEADER = """{name}: regenerated from the descriptor embedded in gtfs-realtime-bindings {version}
by proto/render_proto.py; do not edit by hand. Descriptors carry no comments.

Upstream schema: the GTFS Realtime reference (gtfs-realtime.proto) by Google and
MobilityData, licensed under the Apache License, Version 2.0.

Kept for reference only: the gateway decodes feeds with the bindings' generated classes."""


def literal(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def options(opts: Any) -> list[tuple[str, str]]:
    """Set options as (name, source text); enum-valued options by value name."""
    items = []
    for fd, value in opts.ListFields():
        if fd.is_repeated or fd.message_type is not None:
            sys.exit(f"render_proto: unsupported option {fd.full_name}")
        text = fd.enum_type.values_by_number[value].name if fd.enum_type else literal(value)
        items.append((str(fd.name), text))
    return items


def brackets(items: list[tuple[str, str]]) -> str:
    return " [" + ", ".join(f"{k} = {v}" for k, v in items) + "]" if items else ""


def tail(pad: str, rs: Iterable[tuple[int, int]], names: Iterable[str], ext: bool) -> Iterator[str]:
    """`extensions`/`reserved` statements; ranges are given with an exclusive end."""
    spans = [f"{s} to {'max' if e >= MAX else e - 1}" if e - 1 > s else f"{s}" for s, e in rs]
    if spans:
        yield f"{pad}{'extensions' if ext else 'reserved'} {', '.join(spans)};"
    if names := list(names):
        yield f"{pad}reserved {', '.join(literal(n) for n in names)};"


class Renderer:
    def __init__(self, fdp: Any) -> None:
        self.fdp, self.pkg = fdp, f".{fdp.package}" if fdp.package else ""
        self.names: set[str] = set()  # every message and enum, fully qualified
        todo = [(self.pkg, m) for m in fdp.message_type]
        self.names.update(f"{self.pkg}.{e.name}" for e in fdp.enum_type)
        while todo:
            scope, msg = todo.pop()
            self.names.add(full := f"{scope}.{msg.name}")
            self.names.update(f"{full}.{e.name}" for e in msg.enum_type)
            todo += [(full, n) for n in msg.nested_type]

    def type_ref(self, target: str, scope: str) -> str:
        """Drop the package prefix unless an enclosing scope would shadow the first part."""
        if not target.startswith(self.pkg + "."):
            return target
        short = target[len(self.pkg) + 1 :]
        head = short.split(".")[0]
        while len(scope) > len(self.pkg):
            if f"{scope}.{head}" in self.names:  # would resolve to the nested type
                return target
            scope = scope.rsplit(".", 1)[0]
        return short

    def field(self, f: Any, scope: str) -> str:
        if f.type == FDP.TYPE_GROUP or f.HasField("oneof_index") or f.HasField("extendee"):
            sys.exit(f"render_proto: unsupported field {scope}.{f.name}")
        scalar = FDP.Type.Name(f.type).removeprefix("TYPE_").lower()
        kind = self.type_ref(f.type_name, scope) if f.type_name else scalar
        label = FDP.Label.Name(f.label).removeprefix("LABEL_").lower()
        # strings are stored raw, bytes C-escaped; numbers, inf, nan, bools, enum values as-is
        dv = literal(f.default_value) if f.type == FDP.TYPE_STRING else str(f.default_value)
        if f.type == FDP.TYPE_BYTES:
            dv = f'"{dv}"'
        opts = [("default", dv)] if f.HasField("default_value") else []
        opts += options(f.options)
        return f"{label} {kind} {f.name} = {f.number}{brackets(opts)};"

    def enum(self, e: Any, pad: str) -> Iterator[str]:
        yield f"{pad}enum {e.name} {{"
        yield from (f"{pad}{IND}option {k} = {v};" for k, v in options(e.options))
        for val in e.value:
            yield f"{pad}{IND}{val.name} = {val.number}{brackets(options(val.options))};"
        spans = ((r.start, r.end + 1) for r in e.reserved_range)  # enum ends are inclusive
        yield from tail(pad + IND, spans, e.reserved_name, ext=False)
        yield f"{pad}}}"

    def message(self, m: Any, scope: str, pad: str) -> Iterator[str]:
        full = f"{scope}.{m.name}"
        bad = m.oneof_decl or m.extension or m.options.map_entry
        if bad or any(r.options.ByteSize() for r in m.extension_range):
            sys.exit(f"render_proto: unsupported message {full}")
        yield f"{pad}message {m.name} {{"
        yield from (f"{pad}{IND}option {k} = {v};" for k, v in options(m.options))
        yield from (pad + IND + self.field(f, full) for f in m.field)
        for e in m.enum_type:
            yield from ("", *self.enum(e, pad + IND))
        for nested in m.nested_type:
            yield from ("", *self.message(nested, full, pad + IND))
        if m.extension_range or m.reserved_range or m.reserved_name:
            yield ""
        yield from tail(pad + IND, ((r.start, r.end) for r in m.extension_range), [], ext=True)
        spans = ((r.start, r.end) for r in m.reserved_range)
        yield from tail(pad + IND, spans, m.reserved_name, ext=False)
        yield f"{pad}}}"

    def render(self, header: list[str]) -> Iterator[str]:
        fdp = self.fdp
        if fdp.syntax not in ("", "proto2") or fdp.service or fdp.extension:
            sys.exit("render_proto: unsupported syntax, services or file-level extensions")
        yield from (f"// {line}".rstrip() for line in header)
        yield from ("", 'syntax = "proto2";', *(f'import "{d}";' for d in fdp.dependency))
        if fdp.package:
            yield from ("", f"package {fdp.package};")
        yield from (f"option {k} = {v};" for k, v in options(fdp.options))
        for e in fdp.enum_type:
            yield from ("", *self.enum(e, ""))
        for m in fdp.message_type:
            yield from ("", *self.message(m, self.pkg, ""))


def main() -> None:
    fdp = pb.FileDescriptorProto()
    gtfs_realtime_pb2.DESCRIPTOR.CopyToProto(fdp)
    header = HEADER.format(name=fdp.name, version=version("gtfs-realtime-bindings"))
    sys.stdout.write("\n".join(Renderer(fdp).render(header.splitlines())) + "\n")


if __name__ == "__main__":
    main()
