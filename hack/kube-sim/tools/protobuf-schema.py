#!/usr/bin/env python3
"""Writes src/apiserver/protobuf/schema.rs: the wire schema kube-sim decodes Kubernetes
protobuf bodies with (message -> field number, JSON name, type).

Field numbers and types come from the `k8s-pb` crate (kube-rs's prost bindings of the
upstream .proto files), JSON names from `k8s-openapi` (the serde names kube-sim's clients
use), both as cargo fetched them. Run from hack/kube-sim after changing either version:

    python3 tools/protobuf-schema.py > src/apiserver/protobuf/schema.rs
"""
import json
import os
import re
import subprocess
import sys

# The API groups kube-sim decodes, as k8s-pb module paths (and what they import).
MODULES = [
    "api/core/v1",
    "api/apps/v1",
    "api/events/v1",
    "api/authentication/v1",
    "api/authorization/v1",
    "apimachinery/pkg/apis/meta/v1",
    "apimachinery/pkg/runtime",
    "apimachinery/pkg/api/resource",
    "apimachinery/pkg/util/intstr",
]
OPENAPI_VERSION = "v1_33"
# Embedded Go structs whose protobuf field is not named after their type.
EMBEDDED = {("Probe", "handler")}


def crate_dir(name):
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"], text=True))
    for pkg in meta["packages"]:
        if pkg["name"] == name:
            return os.path.dirname(pkg["manifest_path"])
    sys.exit(f"{name} is not a dependency of the workspace")


FIELD = re.compile(r'#\[prost\((?P<attr>[^\]]*)\)\]\s*pub (?:r#)?(?P<name>\w+):', re.S)


def field_type(text, start):
    """The Rust type that starts at `start`: up to the first comma outside `<…>`."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == "," and depth == 0:
            return re.sub(r"\s+", "", text[start:i])
    return re.sub(r"\s+", "", text[start:])
STRUCT = re.compile(r'pub struct (\w+) \{(.*?)\n\}', re.S)


def resolve(module, ty):
    """The dotted message name of a Rust type path seen from `module`."""
    # rustfmt may leave a trailing comma inside the generics: `Vec<…::Requirement,>`.
    ty = re.sub(r',>', '>', re.sub(r'\s+', '', ty))
    inner = re.findall(r'((?:super::)*(?:\w+::)*[A-Z]\w*)>*$', ty)
    path = inner[0] if inner else ty
    parts = module.split("/")
    segments = path.split("::")
    while segments and segments[0] == "super":
        parts = parts[:-1]
        segments = segments[1:]
    return ".".join(parts + segments)


def openapi_names(root):
    """(module, struct) -> {rust field: JSON name} from k8s-openapi's serde code."""
    names = {}
    base = os.path.join(root, "src", OPENAPI_VERSION)
    for dirpath, _, files in os.walk(base):
        module = os.path.relpath(dirpath, base)
        for f in files:
            text = open(os.path.join(dirpath, f)).read()
            m = re.search(r'pub struct (\w+)', text)
            if not m:
                continue
            pairs = dict((normal(js), js) for js, _ in
                         re.findall(r'"(\w+)" => Field::Key_(\w+),', text))
            names[(module, m.group(1).lower())] = pairs
    return names


def normal(name):
    """The two crates spell acronyms differently in snake case (`pod_cid_rs`, `pod_cidrs`)."""
    return name.replace("_", "").lower()


def lower_camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    pb = crate_dir("k8s-pb")
    openapi = openapi_names(crate_dir("k8s-openapi"))
    # Types k8s-openapi flattens into their parent (VolumeSource, EphemeralContainerCommon)
    # have no struct there: their names come from wherever else the field is spelled.
    anywhere = {}
    for pairs in openapi.values():
        anywhere.update(pairs)
    out = []
    guessed = []
    for module in MODULES:
        text = open(os.path.join(pb, "src", module, "mod.rs")).read()
        for struct, body in STRUCT.findall(text):
            json_names = openapi.get((module, struct.lower()))
            fields = []
            for m in FIELD.finditer(body):
                attr, name = m.group("attr"), m.group("name")
                ty = field_type(body, m.end())
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                repeated = "repeated" in attr
                if attr.startswith("btree_map"):
                    value = re.search(r'btree_map = "string, (\w+)"', attr).group(1)
                    kind = {"string": "Kind::MapOfString", "bytes": "Kind::MapOfBytes"}.get(value)
                    if kind is None:
                        value_type = ty.rstrip(">").rstrip(",").split(",", 1)[1]
                        kind = f'Kind::MapOfMessage("{resolve(module, value_type)}")'
                elif attr.startswith("message"):
                    kind = f'Kind::Message("{resolve(module, ty)}")'
                else:
                    scalar = attr.split(",")[0].split(" ")[0]
                    kind = {"string": "Kind::String", "bool": "Kind::Bool", "int32": "Kind::Int",
                            "int64": "Kind::Int", "bytes": "Kind::Bytes"}[scalar]
                js = (json_names or {}).get(normal(name))
                target = kind.split(".")[-1].rstrip('")')
                inline = js is None and json_names is not None and kind.startswith("Kind::Message") \
                    and (normal(name) == normal(target) or (struct, name) in EMBEDDED)
                if js is None and not inline:
                    js = anywhere.get(normal(name))
                if inline:
                    # Go embeds the struct (`json:",inline"`): its fields sit in the parent.
                    kind = kind.replace("Kind::Message", "Kind::Inline")
                    js = ""
                elif js is None:
                    js = lower_camel(name)
                    guessed.append(f"{module}.{struct}.{name} -> {js}")
                fields.append(f'        Field {{ number: {tag}, json: "{js}", kind: {kind}, repeated: {str(repeated).lower()} }},')
            dotted = module.replace("/", ".") + "." + struct
            out.append(f'    Message {{\n        name: "{dotted}",\n        fields: &[\n' + "\n".join(fields) + "\n        ],\n    },")
    print("//! Generated by `tools/protobuf-schema.py` from the k8s-pb and k8s-openapi crates: do not")
    print("//! edit. The wire schema of the Kubernetes API groups kube-sim decodes from protobuf")
    print("//! (message, field number, JSON name, type); the decoder is in `mod.rs`.")
    print("//!")
    for g in guessed:
        print(f"//! JSON name not in k8s-openapi, derived: {g}")
    print()
    print("use super::{Field, Kind, Message};")
    print()
    print("#[rustfmt::skip]")
    print("pub(super) static MESSAGES: &[Message] = &[")
    print("\n".join(out))
    print("];")


main()
