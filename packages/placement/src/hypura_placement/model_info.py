"""GGUF inspection: architecture, size, quantization, the tensor table with roles, MoE figures.

Reads only the header (:mod:`.gguf_file`), so it works on header-only files and takes milliseconds.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, LlamaFileType

from .gguf_file import GGUFHeader
from .gguf_validate import validate_gguf
from .roles import ROLES, classify, split_name


@dataclass(frozen=True)
class TensorInfo:
    """One tensor: ggml ``shape`` (ne, innermost first), absolute file ``offset``, ``role``, ``layer``."""
    name: str
    ggml_type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    role: str
    layer: int | None

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class ModelInfo:
    """What the planner needs to know about a model, read from its GGUF header."""
    path: str
    architecture: str
    name: str
    file_size: int
    file_type: str              # general.file_type as llama.cpp names it (MOSTLY_Q4_0 ...)
    quantization: str           # the ggml type holding most weight bytes
    n_params: int
    header_only: bool
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ff: int
    context_length: int
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_layer_dense_lead: int = 0
    kv_lora_rank: int = 0
    rope_dim: int = 0
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def tied_embeddings(self) -> bool:
        """No ``output.weight``: llama.cpp uses the token embedding as the output matrix too."""
        return not any(t.role == "output" for t in self.tensors)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0 and any(t.role == "routed_expert" for t in self.tensors)

    def bytes_by_role(self) -> dict[str, int]:
        """Total bytes per role (every role listed, zeros included)."""
        out = dict.fromkeys(ROLES, 0)
        for t in self.tensors:
            out[t.role] += t.nbytes
        return out

    def layer_bytes(self, role: str) -> dict[int, int]:
        """Bytes of ``role`` per layer (layers without it omitted)."""
        out: dict[int, int] = {}
        for t in self.tensors:
            if t.role == role and t.layer is not None:
                out[t.layer] = out.get(t.layer, 0) + t.nbytes
        return out

    def expert_bytes(self) -> int:
        """Bytes of one routed expert of one layer (all its exps tensors: nb[2] = nbytes / n_expert each)."""
        if not self.is_moe:
            return 0
        per_layer = self.layer_bytes("routed_expert")
        return max(per_layer.values()) // self.n_expert

    def touched_fraction(self, t: TensorInfo) -> float:
        """Share of a tensor read per decoded token: one embedding row (all of it when tied to the output),
        n_used/n_expert of routed experts."""
        if t.role == "embedding" and len(t.shape) == 2 and not (t.name == "token_embd.weight" and self.tied_embeddings):
            return 1.0 / t.shape[1]
        if t.role == "routed_expert" and self.n_expert:
            return self.n_expert_used / self.n_expert
        return 1.0

    def bytes_per_token(self) -> int:
        """Weight bytes touched per decoded token (uniform routing expectation for MoE)."""
        return int(sum(t.nbytes * self.touched_fraction(t) for t in self.tensors))

    def active_params(self) -> int:
        """Parameters used per token (the same expectation)."""
        return int(sum(t.n_elements * self.touched_fraction(t) for t in self.tensors))

    def summary(self) -> dict[str, Any]:
        """Everything but the tensor table, as plain data (``hypura inspect --json``)."""
        d = {k: v for k, v in asdict(self).items() if k != "tensors"}
        d.update(bytes_by_role=self.bytes_by_role(), expert_bytes=self.expert_bytes(),
                 bytes_per_token=self.bytes_per_token(), active_params=self.active_params(),
                 n_tensors=len(self.tensors))
        return d


def _type_name(t: int) -> str:
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return str(t)


def _file_type_name(ft: Any) -> str:
    try:
        return LlamaFileType(int(ft)).name
    except (TypeError, ValueError):
        return "unknown" if ft is None else str(ft)


def _int(v: Any, default: int = 0) -> int:
    if isinstance(v, list):                     # per-layer arrays (e.g. head_count_kv): the largest
        v = max((x for x in v if isinstance(x, (int, float))), default=default)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def model_info_from_header(h: GGUFHeader) -> ModelInfo:
    """Build :class:`ModelInfo` from an already parsed header."""
    kv = h.kv
    arch = str(kv.get("general.architecture", "unknown"))

    def key(suffix: str, default: int = 0) -> int:
        return _int(kv.get(f"{arch}.{suffix}"), default)

    names = [t.name for t in h.tensors]
    roles = classify(names, arch)
    tensors = [TensorInfo(t.name, _type_name(t.ggml_type), t.shape, t.offset, t.nbytes, roles[t.name],
                          split_name(t.name)[0]) for t in h.tensors]
    n_embd = key("embedding_length")
    n_head = key("attention.head_count")
    n_layer = key("block_count") or 1 + max((t.layer for t in tensors if t.layer is not None), default=-1)
    emb = next((t for t in tensors if t.name == "token_embd.weight"), None)
    n_vocab = key("vocab_size") or h.array_lengths.get("tokenizer.ggml.tokens", 0) or (
        emb.shape[1] if emb is not None and len(emb.shape) > 1 else 0)
    weight_bytes = Counter()
    for t in tensors:
        if len(t.shape) > 1:
            weight_bytes[t.ggml_type] += t.nbytes
    quant = weight_bytes.most_common(1)[0][0] if weight_bytes else "none"
    return ModelInfo(
        path=str(h.path), architecture=arch, name=str(kv.get("general.name", h.path.stem)),
        file_size=h.total_size, file_type=_file_type_name(kv.get("general.file_type")), quantization=quant,
        n_params=sum(t.n_elements for t in tensors), header_only=not h.complete, n_layer=n_layer,
        n_embd=n_embd, n_head=n_head, n_head_kv=key("attention.head_count_kv", n_head),
        head_dim=key("attention.key_length") or (n_embd // n_head if n_head else 0), n_vocab=n_vocab,
        n_ff=key("feed_forward_length"), context_length=key("context_length"),
        n_expert=key("expert_count"), n_expert_used=key("expert_used_count"),
        n_expert_shared=key("expert_shared_count"), n_layer_dense_lead=key("leading_dense_block_count"),
        kv_lora_rank=key("attention.kv_lora_rank"), rope_dim=key("rope.dimension_count"), tensors=tensors)


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Inspect a GGUF file (header-only files accepted). Raises GGUFError for a bad file."""
    return model_info_from_header(validate_gguf(Path(path), allow_header_only=True))
