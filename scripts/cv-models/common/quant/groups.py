"""Layer groups for the precision search: what is kept in FP16 (or quantized) together.

``yolov10`` (the default) groups the nodes of an Ultralytics YOLOv10 export the way the network is
built: one group per ``model.N`` block (``/model.N/...`` node names), with the detect head split into
its branches -- per stride ``i`` the box tower ``cv2.i`` and the class tower ``cv3.i`` (``one2one_cv2.i``
/ ``one2one_cv3.i`` in end-to-end exports), the DFL (``dfl``) and the rest of the head's
post-processing (``post``: reshapes, concats, sigmoid, box arithmetic, top-k). Strides are 8, 16 and
32 for branch index 0, 1 and 2 (YOLOv10's P3/P4/P5 outputs). Nodes outside any ``/model.N/`` scope
form the group ``other``.

``node`` makes every node its own group. A JSON file maps group names to node-name regexes,
matched the way ModelOpt matches ``nodes_to_exclude`` (``re.match``, anchored at the start)::

    {"backbone": ["/model\\.[0-9]/"], "neck": ["/model\\.1[0-9]/", "/model\\.2[0-2]/"]}

``group_key`` maps an ONNX node name or a Torch module name (``model.23.cv3.1.0.conv``) to the
``yolov10`` group it belongs to, so per-layer scores from elsewhere can be summed per group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.quant.presets import match_patterns, near_matches

__all__ = [
    "GROUPINGS",
    "Group",
    "exclusion_patterns",
    "file_groups",
    "group_key",
    "head_block",
    "make_groups",
    "node_groups",
    "nodes_of",
    "read_json_input",
    "yolov10_groups",
]

GROUPINGS: tuple[str, ...] = ("yolov10", "node")
_BLOCK = re.compile(r"^model\.(\d+)$")
_BRANCH = re.compile(r"^(one2one_)?cv([23])\.(\d+)$")
_KINDS_ORDER = {"block": 0, "box": 1, "cls": 2, "dfl": 3, "post": 4, "other": 5}


@dataclass(frozen=True)
class Group:
    """Nodes that are kept in high precision, or quantized, together."""

    name: str  # model.2 | model.23.cv2.0 | model.23.dfl | model.23.post | other | a node name | a user name
    kind: str  # block | box | cls | dfl | post | other | node | user
    label: str  # for reports: "model.23.cv2.0 (box, stride 8)"
    nodes: tuple[str, ...]


def _tokens(name: str) -> list[str]:
    """Scope tokens of an ONNX node name (``/model.23/cv2.0/...``) or a Torch module name (``model.23.cv2.0.0``)."""
    if "/" in name:
        return [t for t in name.split("/") if t]
    parts = name.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i + 1].isdigit():
            out.append(f"{parts[i]}.{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def _is_head(tokens: Sequence[str]) -> bool:
    return len(tokens) >= 2 and _BRANCH.match(tokens[1]) is not None


def group_key(name: str, head: str | None = None) -> str:
    """The ``yolov10`` group of a node or module name: ``model.N``, ``model.N.cv2.i``, ``model.N.dfl``,
    ``model.N.post`` (inside the ``head`` block, e.g. ``model.23``), or ``other``."""
    tokens = _tokens(name)
    if not tokens or not _BLOCK.match(tokens[0]):
        return "other"
    block = tokens[0]
    if head is None or block != head:
        return block
    sub = tokens[1] if len(tokens) > 1 else ""
    if _BRANCH.match(sub):
        return f"{block}.{sub}"
    return f"{block}.dfl" if sub == "dfl" else f"{block}.post"


def head_block(names: Iterable[str]) -> str | None:
    """The ``model.N`` block holding cv2.i / cv3.i branches (the v10Detect head), if any."""
    for name in names:
        tokens = _tokens(name)
        if tokens and _BLOCK.match(tokens[0]) and _is_head(tokens):
            return tokens[0]
    return None


def _describe(key: str) -> tuple[str, str]:
    """(kind, label) of a yolov10 group name."""
    if key == "other":
        return "other", "other (outside model.N)"
    tail = key.split(".", 2)[2] if key.count(".") >= 2 else ""
    m = _BRANCH.match(tail)
    if m:
        kind = "box" if m.group(2) == "2" else "cls"
        one2one = ", one-to-one" if m.group(1) else ""
        return kind, f"{key} ({kind}, stride {8 * 2 ** int(m.group(3))}{one2one})"
    if tail in ("dfl", "post"):
        return tail, f"{key} ({'DFL' if tail == 'dfl' else 'head post-processing'})"
    return "block", key


def _order(group: Group) -> tuple[int, int, str]:
    tokens = group.name.split(".")
    block = int(tokens[1]) if len(tokens) > 1 and tokens[0] == "model" and tokens[1].isdigit() else 10**6
    return block, _KINDS_ORDER.get(group.kind, 9), group.name


def yolov10_groups(model: Any) -> list[Group]:
    """One group per ``model.N`` block, the head split into box / class branches per stride, DFL, post."""
    names = [n.name for n in model.graph.node]
    head = head_block(names)
    members: dict[str, list[str]] = {}
    for name in names:
        members.setdefault(group_key(name, head), []).append(name)
    groups = [Group(key, *_describe(key), tuple(nodes)) for key, nodes in members.items()]
    return sorted(groups, key=_order)


def node_groups(model: Any) -> list[Group]:
    """Every named node its own group."""
    return [Group(n.name, "node", f"{n.name} ({n.op_type})", (n.name,)) for n in model.graph.node if n.name]


def file_groups(model: Any, path: Path) -> list[Group]:
    """Groups from a JSON file ``{name: [node-name regex, ...]}``; every regex must match, no node twice."""
    spec = _read_spec(path)
    names = [n.name for n in model.graph.node]
    owner: dict[str, str] = {}
    groups = []
    for gname, patterns in spec.items():
        hits = match_patterns(names, patterns, flag=f"--groups {path}: group {gname!r}")
        nodes: dict[str, None] = {}
        for pat, found in hits.items():
            if not found:
                near = near_matches(pat, names)
                hint = f"near matches: {', '.join(near)}" if near else "no similar node names"
                raise UserError(f"--groups {path}: group {gname!r} pattern {pat!r} matches no node; {hint}")
            nodes.update(dict.fromkeys(found))
        for node in nodes:
            if node in owner:
                raise UserError(f"--groups {path}: node {node} is in both {owner[node]!r} and {gname!r}")
            owner[node] = gname
        groups.append(Group(gname, "user", gname, tuple(nodes)))
    return groups


def read_json_input(flag: str, path: Path) -> Any:
    """The JSON in the file ``flag`` names; a one-line UserError when it can't be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{flag} {path}: not readable JSON ({exc})") from None


def _read_spec(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise UserError(f"--groups {path}: no such file; pass yolov10, node or a JSON file of groups")
    spec = read_json_input("--groups", path)
    ok = isinstance(spec, dict) and spec and all(isinstance(k, str) and k for k in spec)
    ok = ok and all(isinstance(v, list) and v and all(isinstance(p, str) for p in v) for v in spec.values())
    if not ok:
        raise UserError(
            f"--groups {path}: expected a JSON object mapping group names to non-empty lists of node-name "
            'regexes, e.g. {"backbone": ["/model\\\\.[0-9]/"]}'
        )
    return spec


def make_groups(model: Any, spec: str) -> list[Group]:
    """``yolov10`` | ``node`` | a JSON file (see the module docstring)."""
    if spec == "yolov10":
        return yolov10_groups(model)
    if spec == "node":
        return node_groups(model)
    return file_groups(model, Path(spec))


def nodes_of(groups: Iterable[Group], names: Iterable[str]) -> list[str]:
    """The nodes of the named groups, in group order, each once."""
    wanted = set(names)
    out: dict[str, None] = {}
    for g in groups:
        if g.name in wanted:
            out.update(dict.fromkeys(g.nodes))
    return list(out)


def exclusion_patterns(nodes: Iterable[str]) -> list[str]:
    """Node names as ModelOpt ``nodes_to_exclude`` patterns that match exactly that node (``re.match``)."""
    return [re.escape(n) + "$" for n in nodes]
