"""Facet-decoupled attention: every facet embedding of a caption in one forward pass.

One row of a batch is ``P F1 F2 ... FK`` (right-padded). The additive attention mask lets
  - a prefix token see the earlier prefix tokens (causal),
  - a token of facet k see all of P and the earlier tokens of Fk, nothing of another facet,
  - no real token see a pad (pads are masked as KEY columns; a pad query sees only itself,
    so no softmax row is empty and no NaN can leak through a zero weight).
Position ids restart at |P| for every facet, so each facet is computed exactly as if
``P + Fk`` had been run alone: that equality is what tests/test_facets.py checks. With
``embed.positions: continue`` (the reference code's layout) they run on across the facets
instead: facet k starts at |P| + |F1| + ... + |F(k-1)|, as in the packed sequence.
Embedding k = ``hidden_states[layer]`` at the last token of Fk, L2-normalised; with a list of
layers, the mean of their hidden states there.

Models with sliding-window layers (Gemma 3, some Qwen2 configs) get a second mask with the
window applied in position space, passed as transformers' per-layer-type mask mapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from flame_pipeline.text.prompts import PromptTokens

PAD = -1      # segment id of padding
PREFIX = 0    # segment id of the prefix; facet k (1-based) has segment k


@dataclass
class PackedBatch:
    input_ids: torch.Tensor     # [B, L] long
    position_ids: torch.Tensor  # [B, L] long
    segments: torch.Tensor      # [B, L] long: PAD, PREFIX or the facet number
    last: torch.Tensor          # [B, Kmax] long: index of facet k's last token (0 where absent)
    n_facets: list[int]         # K per row

    @property
    def n_tokens(self) -> int:
        return int((self.segments != PAD).sum())


def pack(rows: list[PromptTokens], pad_id: int = 0, positions: str = "restart") -> PackedBatch:
    """Lay out rows as P F1..FK, right-padded to the longest row; each facet's positions
    ``restart`` at |P| or ``continue`` from the facet before it."""
    length = max(r.n_tokens for r in rows)
    k_max = max(len(r.facets) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    seg = torch.full((len(rows), length), PAD, dtype=torch.long)
    last = torch.zeros((len(rows), k_max), dtype=torch.long)
    for b, row in enumerate(rows):
        p = len(row.prefix)
        ids[b, :p] = torch.tensor(row.prefix)
        pos[b, :p] = torch.arange(p)
        seg[b, :p] = PREFIX
        at = p
        for k, facet in enumerate(row.facets):
            n = len(facet)
            ids[b, at:at + n] = torch.tensor(facet)
            first = p if positions == "restart" else at
            pos[b, at:at + n] = torch.arange(first, first + n)
            seg[b, at:at + n] = k + 1
            last[b, k] = at + n - 1
            at += n
    return PackedBatch(ids, pos, seg, last, [len(r.facets) for r in rows])


def allowed(segments: torch.Tensor, positions: torch.Tensor,
            window: int | None = None) -> torch.Tensor:
    """Bool [B, L, L]: query i may attend key j (the rules in the module docstring)."""
    n = segments.shape[1]
    q_seg, k_seg = segments[:, :, None], segments[:, None, :]
    idx = torch.arange(n, device=segments.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    ok = causal & (q_seg != PAD) & (k_seg != PAD) & ((k_seg == PREFIX) | (k_seg == q_seg))
    if window is not None:   # the sliding window counts positions of the standalone sequence
        ok &= (positions[:, :, None] - positions[:, None, :]) < window
    return ok | torch.eye(n, dtype=torch.bool, device=segments.device)[None]


def additive_mask(ok: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] float mask: 0 where allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros(ok.shape, dtype=dtype, device=ok.device)
    mask.masked_fill_(~ok, torch.finfo(dtype).min)
    return mask[:, None]


def attention_mask(model, batch: PackedBatch, device: torch.device, dtype: torch.dtype):
    """The model's custom mask: one 4D tensor, or a per-layer-type mapping for sliding layers."""
    seg, pos = batch.segments.to(device), batch.position_ids.to(device)
    full = additive_mask(allowed(seg, pos), dtype)
    layer_types = getattr(model.config, "layer_types", None) or []
    if "sliding_attention" not in layer_types:
        return full
    window = model.config.sliding_window
    return {"full_attention": full,
            "sliding_attention": additive_mask(allowed(seg, pos, window), dtype)}


def at_last(hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """float32 [B, Kmax, d]: ``hidden`` [B, L, d] at each facet's last token (``PackedBatch.last``)."""
    index = last.to(hidden.device)[:, :, None].expand(-1, -1, hidden.shape[-1])
    return torch.gather(hidden, 1, index).float()


@torch.inference_mode()
def facet_embeddings(model, rows: list[PromptTokens], layer: int | list[int] = -2,
                     positions: str = "restart") -> list[torch.Tensor]:
    """One forward pass for ``rows``; per row a float32 tensor [K, d] of L2-normalised
    hidden states (``hidden_states[layer]``, or the mean of ``hidden_states[i]`` over a list
    ``layer``) at the last token of each facet (``positions``: see ``pack``)."""
    # where the inputs go (under embed.device_map: the first GPU), in the compute dtype (the
    # linear weights of a quantized model are integers)
    embedding = model.get_input_embeddings().weight
    batch = pack(rows, positions=positions)
    out = model(input_ids=batch.input_ids.to(embedding.device),
                position_ids=batch.position_ids.to(embedding.device),
                attention_mask=attention_mask(model, batch, embedding.device, embedding.dtype),
                output_hidden_states=True, use_cache=False)
    if isinstance(layer, int):
        picked = at_last(out.hidden_states[layer], batch.last)          # [B, Kmax, d]
    else:   # sharded by device_map, the layers' states may sit on different GPUs
        picked = torch.stack([at_last(out.hidden_states[i], batch.last).to(embedding.device)
                              for i in layer]).mean(dim=0)
    picked = torch.nn.functional.normalize(picked, dim=-1).cpu()
    return [picked[b, :k] for b, k in enumerate(batch.n_facets)]
