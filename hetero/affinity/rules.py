"""AFFINITY_RULES: ordered placement rules by op type and node-name glob.

Syntax (the property is one string; rules are separated by ';' or newlines)::

    Softmax=CPU; conv*=GPU; op:Gemm=CPU; name:fc?=GPU.1

* ``op:PATTERN=DEV`` matches nodes whose op type matches PATTERN (a glob, case-sensitive);
* ``name:PATTERN=DEV`` matches nodes whose name matches PATTERN (a glob, case-sensitive);
* a bare ``PATTERN=DEV`` matches either (op types are CamelCase, so ``Softmax`` hits the op and
  ``conv*`` hits names in practice).

Rules are tried in order; the first that matches a node decides it ("rule 2 (conv*=GPU)").
A list of ``(pattern, device)`` pairs or of ``"pattern=device"`` strings is accepted too.

Traced example: rules ``"Softmax=CPU; conv*=GPU"`` on nodes conv1 (Conv), prob (Softmax), fc (Gemm):
conv1 is not a Softmax, its name matches ``conv*`` -> rule 2, GPU; prob matches rule 1 -> CPU;
fc matches nothing -> left to the policy (fallback priorities or cost).

Graph passes fuse nodes (Conv + Relu -> FusedConv): a rule also matches a node through the
originals it absorbed, so "Relu=CPU" sends a FusedConv holding a Relu to the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable

from ..errors import PropertyError
from ..ir import Node

@dataclass(frozen=True)
class Rule:
    """One placement rule; ``index`` is 1-based, as users count them."""

    index: int
    pattern: str
    device: str
    kind: str = "any"  # "any" | "op" | "name"

    def matches(self, node: Node, originals: Iterable[tuple[str, str]] = ()) -> bool:
        """Does the rule hit ``node``, or one of the ``originals`` ((name, op type) of nodes the graph
        passes fused into it, e.g. the Relu inside a FusedConv)?"""
        for name, op in ((node.name, node.op_type), *originals):
            if self.kind in ("any", "op") and fnmatchcase(op, self.pattern):
                return True
            if self.kind in ("any", "name") and fnmatchcase(name, self.pattern):
                return True
        return False

    @property
    def text(self) -> str:
        prefix = "" if self.kind == "any" else self.kind + ":"
        return f"{prefix}{self.pattern}={self.device}"

    def describe(self) -> str:
        return f"rule {self.index} ({self.text})"


def parse_rules(spec: str | Iterable | None) -> tuple[Rule, ...]:
    """Parse AFFINITY_RULES into Rules; PropertyError names a malformed rule and shows the syntax."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        items: list = [s for part in spec.splitlines() for s in part.split(";")]
    else:
        items = list(spec)
    rules: list[Rule] = []
    for raw in items:
        if isinstance(raw, Rule):
            rules.append(Rule(len(rules) + 1, raw.pattern, raw.device, raw.kind))
            continue
        if isinstance(raw, (tuple, list)) and len(raw) == 2:
            text = f"{raw[0]}={raw[1]}"
        elif isinstance(raw, str):
            text = raw
        else:
            raise PropertyError(f"AFFINITY_RULES: cannot read rule {raw!r}; expected 'pattern=DEVICE' "
                                "or a (pattern, device) pair")
        text = text.strip()
        if not text:
            continue  # empty segments ("a=CPU;;") are harmless
        pattern, eq, device = text.rpartition("=")
        pattern, device = pattern.strip(), device.strip()
        if not eq or not pattern or not device:
            raise PropertyError(f"AFFINITY_RULES: malformed rule {text!r}; expected 'pattern=DEVICE', "
                                "e.g. 'Softmax=CPU; conv*=GPU; op:Gemm=CPU; name:fc?=GPU.1'")
        kind = "any"
        head, colon, tail = pattern.partition(":")
        if colon and head.strip().lower() in ("op", "name"):
            kind, pattern = head.strip().lower(), tail.strip()
            if not pattern:
                raise PropertyError(f"AFFINITY_RULES: rule {text!r} has an empty {kind} pattern")
        rules.append(Rule(len(rules) + 1, pattern, device, kind))
    return tuple(rules)


def first_match(rules: Iterable[Rule], node: Node, originals: Iterable[tuple[str, str]] = ()) -> Rule | None:
    originals = tuple(originals)
    for r in rules:
        if r.matches(node, originals):
            return r
    return None
