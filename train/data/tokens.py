"""Tokenising and encoding captions with kohya's 75-token chunking (``get_input_ids`` / ``get_hidden_states``
and ``sdxl_train_util.get_hidden_states_sdxl``).

A caption is tokenised to ``max_token_length + 2`` tokens, cut into 75-token chunks, and each chunk is wrapped
as ``<BOS> chunk <EOS/PAD>`` (77 tokens) and encoded on its own. The hidden states are stitched back as
``<BOS>``, the 75 inner states of every chunk, and the last chunk's final state: 77, 152 or 227 positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

    from train.models.kinds import CLIPTextModelWithProjection, CLIPTokenizer, TextEncoder

CLIP_LENGTH = 77


def tokenize(tokenizer: CLIPTokenizer, texts: list[str], max_token_length: int = 75) -> torch.Tensor:
    """Token ids shaped (batch, chunks, 77) for ``max_token_length`` 75, 150 or 225."""
    import torch

    total = max_token_length + 2
    ids: torch.Tensor = tokenizer(texts, padding="max_length", truncation=True, max_length=total,
                                  return_tensors="pt").input_ids
    if total <= CLIP_LENGTH:
        return ids.unsqueeze(1)
    bos, eos = ids[:, :1], ids[:, -1:]
    pad_is_eos = tokenizer.pad_token_id == tokenizer.eos_token_id
    chunks = []
    for start in range(1, total - CLIP_LENGTH + 2, CLIP_LENGTH - 2):
        chunk = torch.cat([bos, ids[:, start:start + CLIP_LENGTH - 2], eos], dim=1).clone()
        if not pad_is_eos:
            # SD2 / SDXL encoder 2 pad with a token other than EOS: an unfinished chunk must end with EOS, and an
            # empty chunk starts <BOS> <EOS> <PAD>... (kohya's rules).
            last = chunk[:, -2]
            unfinished = (last != tokenizer.eos_token_id) & (last != tokenizer.pad_token_id)
            chunk[unfinished, -1] = tokenizer.eos_token_id
            empty = chunk[:, 1] == tokenizer.pad_token_id
            chunk[empty, 1] = tokenizer.eos_token_id
        chunks.append(chunk)
    return torch.stack(chunks, dim=1)


def _stitch(states: torch.Tensor, batch: int, max_token_length: int) -> torch.Tensor:
    """(batch*chunks, 77, dim) -> (batch, max_token_length + 2, dim) the kohya way."""
    import torch

    states = states.reshape(batch, -1, states.shape[-1])
    if max_token_length <= CLIP_LENGTH - 2:
        return states
    parts = [states[:, :1]]
    for start in range(1, max_token_length, CLIP_LENGTH):
        parts.append(states[:, start:start + CLIP_LENGTH - 2])
    parts.append(states[:, -1:])
    return torch.cat(parts, dim=1)


def encode_sd(text_encoder: TextEncoder, ids: torch.Tensor, max_token_length: int, clip_skip: int = 1) -> torch.Tensor:
    """SD1/SD2 conditioning (batch, tokens, dim). ``clip_skip`` 2 = penultimate layer + final_layer_norm."""
    batch = ids.shape[0]
    flat = ids.reshape(-1, CLIP_LENGTH).to(text_encoder.device)
    if clip_skip <= 1:
        states = text_encoder(flat)[0]
    else:
        out = text_encoder(flat, output_hidden_states=True, return_dict=True)
        model: torch.nn.Module = getattr(text_encoder, "text_model", text_encoder)  # transformers 4 nests it
        final_norm = cast("torch.nn.LayerNorm", model.final_layer_norm)
        states = final_norm(out.hidden_states[-clip_skip])
    return _stitch(states, batch, max_token_length)


def _pooled(text_encoder: CLIPTextModelWithProjection, last_hidden: torch.Tensor, ids: torch.Tensor,
            eos_token_id: int) -> torch.Tensor:
    """Pooled output at the first EOS token, projected (kohya's ``pool_workaround``)."""
    import torch

    eos_index = (ids == eos_token_id).int().argmax(dim=-1)
    pooled = last_hidden[torch.arange(last_hidden.shape[0], device=last_hidden.device), eos_index.to(last_hidden.device)]
    projection: torch.nn.Linear = text_encoder.text_projection
    projected: torch.Tensor = projection(pooled.to(projection.weight.dtype))
    return projected


def encode_sdxl(
    text_encoders: list[TextEncoder], tokenizers: list[CLIPTokenizer], ids1: torch.Tensor, ids2: torch.Tensor,
    max_token_length: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL conditioning: penultimate states of both encoders concatenated (batch, tokens, 2048) and the
    pooled, projected output of encoder 2 for the first chunk (batch, 1280)."""
    import torch
    from transformers import CLIPTextModelWithProjection

    te1, te2 = text_encoders
    assert isinstance(te2, CLIPTextModelWithProjection), "SDXL's second text encoder has a projection"
    batch, chunks = ids1.shape[0], ids1.shape[1]
    flat1 = ids1.reshape(-1, CLIP_LENGTH).to(te1.device)
    flat2 = ids2.reshape(-1, CLIP_LENGTH).to(te2.device)
    h1 = te1(flat1, output_hidden_states=True, return_dict=True).hidden_states[-2]
    out2 = te2(flat2, output_hidden_states=True, return_dict=True)
    h2 = out2.hidden_states[-2]
    pool = _pooled(te2, out2.last_hidden_state, flat2, tokenizers[1].eos_token_id)
    h1 = _stitch(h1, batch, max_token_length)
    h2 = _stitch(h2, batch, max_token_length)
    pool = pool[::chunks]
    return torch.cat([h1, h2.to(h1.dtype)], dim=2), pool
