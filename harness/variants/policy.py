"""Mixed-precision policies: the modules a variant leaves in the baseline format. No torch here.

One class serves both readers. apply() asks `keeps(fqn)` of every module it would change; the planner
asks the same question of the names a Llama-family decoder gives its linears (`block_fqn`), so a
policy file projects exactly what it measures.

Built-in policies (the `@name` suffix of a variant):
  keep-attn: every attention projection (q/k/v/o_proj, or the fused qkv_proj).
  keep-ends: the first and the last decoder block, and lm_head.
A policy file (`@path/to/policy.txt`) lists one fnmatch pattern of module names per line
(e.g. `model.layers.0.*`, `lm_head`); `#` starts a comment.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace
from pathlib import Path

# Module that holds each linear of ArchShape.linear_shapes() in a transformers Llama-family block.
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
# Projections the CUDA engine fuses before apply() (harness.backends.pytorch.lean): a fused module is kept
# when a policy keeps any of its parts, since one module has one precision and the policy's promise
# is about the parts.
_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def block_fqn(linear: str, block: int) -> str:
    """The module name of linear `linear` (q_proj, ..., down_proj) in decoder block `block`."""
    return f"model.layers.{block}.{_PARENT[linear]}.{linear}"


class PolicyError(ValueError):
    """A policy file that is missing or empty, or a policy used without the facts it needs."""


@dataclass(frozen=True)
class Policy:
    """Modules kept in the baseline format, by fully qualified module name."""
    name: str
    patterns: tuple[str, ...] = ()                 # fnmatch patterns of module names
    keep_linears: frozenset[str] = frozenset()     # linears of every block, by ArchShape.linear_shapes() name
    keep_end_blocks: bool = False                  # the first and last decoder blocks (see bind)
    layers: tuple[int, ...] = ()                   # decoder block indices kept whole
    description: str = ""

    def bind(self, num_layers: int | None) -> "Policy":
        """This policy for a model of `num_layers` decoder blocks (keep-ends needs the count)."""
        if not self.keep_end_blocks:
            return self
        if num_layers is None:
            raise PolicyError(f"{self.name} needs the model's number of layers")
        return replace(self, layers=tuple(sorted({*self.layers, 0, num_layers - 1})), keep_end_blocks=False)

    def keeps(self, fqn: str) -> bool:
        parent, _, leaf = fqn.rpartition(".")
        if leaf in _FUSED:
            stem = f"{parent}." if parent else ""
            if any(self._keeps_one(stem + part) for part in _FUSED[leaf]):
                return True
        return self._keeps_one(fqn)

    @property
    def keeps_lm_head(self) -> bool:
        return self.keeps("lm_head")

    def _keeps_one(self, fqn: str) -> bool:
        parent, _, leaf = fqn.rpartition(".")
        if leaf in self.keep_linears and parent.rpartition(".")[2] == _PARENT.get(leaf):
            return True
        m = _LAYER.search(fqn)
        if m and (self.layers or self.keep_end_blocks):
            if self.keep_end_blocks:
                raise PolicyError(f"{self.name} is not bound to a number of layers (Policy.bind)")
            if int(m.group(1)) in self.layers:
                return True
        return any(fnmatch.fnmatchcase(fqn, p) for p in self.patterns)

    @classmethod
    def from_file(cls, path: Path) -> "Policy":
        if not path.is_file():
            raise PolicyError(f"policy file {path} not found (built-in policies: {', '.join('@' + n for n in POLICIES)})")
        pats = tuple(line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
        pats = tuple(p for p in pats if p)
        if not pats:
            raise PolicyError(f"policy file {path} lists no module patterns")
        return cls(str(path), patterns=pats, description=f"modules matching the {len(pats)} patterns of {path}")

    @classmethod
    def union(cls, policies: "list[Policy]") -> "Policy | None":
        """One policy keeping what any of `policies` keeps (`int4-wo@keep-attn@keep-ends`)."""
        if len(policies) <= 1:
            return policies[0] if policies else None
        return cls("@".join(p.name for p in policies), tuple(x for p in policies for x in p.patterns),
                   frozenset().union(*(p.keep_linears for p in policies)), any(p.keep_end_blocks for p in policies),
                   tuple(sorted({i for p in policies for i in p.layers})), "; ".join(p.description for p in policies))


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("keep-attn", keep_linears=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}),
           description="attention projections (q, k, v, o) stay in the baseline format"),
    Policy("keep-ends", patterns=("lm_head",), keep_end_blocks=True,
           description="first and last decoder blocks and the lm_head stay in the baseline format"),
)}
