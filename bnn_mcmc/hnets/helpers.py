"""Helpers that work on any hypernetwork of :mod:`bnn_mcmc.hnets`.

They hide where each network keeps its condition-specific tensors: input embeddings
(:meth:`HMLP.get_cond_in_emb <bnn_mcmc.hnets.HMLP.get_cond_in_emb>`), chunk embeddings of
the chunked networks, the held tensors of an :class:`~bnn_mcmc.hnets.HContainer`, and the
network inside an :class:`~bnn_mcmc.hnets.HPerturbWrapper`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .chunked_hmlp import ChunkedHMLP
from .container import HContainer
from .perturb_wrapper import HPerturbWrapper
from .structured_hmlp import StructuredHMLP


def _held_cond_in_embs(hnet: nn.Module) -> list:
    embs = getattr(hnet, "cond_embs", None)
    return [] if embs is None else list(embs)


def get_conditional_parameters(hnet: nn.Module, cond_id: int) -> list:
    """The held parameters of ``hnet`` that belong to condition ``cond_id``.

    Parameters
    ----------
    hnet : nn.Module
        A hypernetwork of :mod:`bnn_mcmc.hnets`.
    cond_id : int
        The condition.

    Returns
    -------
    list of torch.nn.Parameter
        Its input embedding (if held), its conditional chunk embeddings (chunked networks
        with ``cond_chunk_embs=True``), for an :class:`HContainer` its own conditional
        tensors and those of its internal networks; ``[]`` if none is held.
    """
    if isinstance(cond_id, bool) or not isinstance(cond_id, int) or cond_id < 0:
        raise ValueError(f"cond_id must be a non-negative int, got {cond_id!r}.")
    if isinstance(hnet, HPerturbWrapper):
        return get_conditional_parameters(hnet.internal_hnet, cond_id)
    if isinstance(hnet, HContainer):
        out = [p for h in hnet.internal_hnets for p in get_conditional_parameters(h, cond_id)]
        if hnet.cond_tensors is not None and cond_id < hnet.num_known_conds:
            try:
                out += hnet.own_conditional_tensors(cond_id)
            except ValueError:
                pass
        return out
    embs = _held_cond_in_embs(hnet)
    out = [embs[cond_id]] if cond_id < len(embs) else []
    if isinstance(hnet, ChunkedHMLP) and hnet.cond_chunk_embs and \
            hnet.cond_chunk_emb_list is not None and cond_id < len(hnet.cond_chunk_emb_list):
        out.append(hnet.cond_chunk_emb_list[cond_id])
    if isinstance(hnet, StructuredHMLP) and hnet.cond_chunk_embs and \
            hnet.cond_chunk_emb_list is not None and cond_id < hnet.num_known_conds:
        out += hnet.get_chunk_embs(cond_id)
    return out


@torch.no_grad()
def init_conditional_embeddings(
    hnet: nn.Module,
    normal_mean: float = 0.0,
    normal_std: float = 1.0,
    init_fct: Callable | None = None,
) -> None:
    """Initialise the held conditional input embeddings of ``hnet`` in place.

    Every embedding :math:`e_k` is drawn from :math:`\\mathcal N(\\text{normal\\_mean},
    \\text{normal\\_std}^2)`, or ``init_fct(e_k, k)`` is called instead.  Chunk embeddings
    are not input embeddings (see :func:`init_chunk_embeddings`); networks without held
    input embeddings are left unchanged.
    """
    if isinstance(hnet, HPerturbWrapper):
        return init_conditional_embeddings(hnet.internal_hnet, normal_mean, normal_std, init_fct)
    if isinstance(hnet, HContainer):
        for h in hnet.internal_hnets:
            init_conditional_embeddings(h, normal_mean, normal_std, init_fct)
        return None
    for k, emb in enumerate(_held_cond_in_embs(hnet)):
        if init_fct is None:
            emb.normal_(normal_mean, normal_std)
        else:
            init_fct(emb, k)
    return None


@torch.no_grad()
def init_chunk_embeddings(
    hnet: nn.Module,
    normal_mean: float = 0.0,
    normal_std: float = 1.0,
    init_fct: Callable | None = None,
) -> None:
    """Initialise the held chunk embeddings of a chunked hypernetwork in place.

    ``init_fct(cemb, cid, cond_id=None)`` receives the embedding tensor, its index and,
    for conditional chunk embeddings, the condition; without it the embeddings are drawn
    from :math:`\\mathcal N(\\text{normal\\_mean}, \\text{normal\\_std}^2)`.  For a
    :class:`ChunkedHMLP` the tensor holds all chunk embeddings of one set, for a
    :class:`StructuredHMLP` one ``[K_i, E_i]`` tensor per internal network (as in
    :attr:`StructuredHMLP.chunk_emb_shapes`).  Other networks are left unchanged.
    """
    if isinstance(hnet, HPerturbWrapper):
        return init_chunk_embeddings(hnet.internal_hnet, normal_mean, normal_std, init_fct)
    if isinstance(hnet, HContainer):
        for h in hnet.internal_hnets:
            init_chunk_embeddings(h, normal_mean, normal_std, init_fct)
        return None
    sets: list[tuple[int | None, list]] = []
    if isinstance(hnet, ChunkedHMLP):
        if hnet.chunk_embs is not None:
            sets.append((None, [hnet.chunk_embs]))
        if hnet.cond_chunk_emb_list is not None:
            sets += [(k, [e]) for k, e in enumerate(hnet.cond_chunk_emb_list)]
    elif isinstance(hnet, StructuredHMLP):
        if hnet.chunk_embs is not None:
            sets.append((None, list(hnet.chunk_embs)))
        if hnet.cond_chunk_emb_list is not None:
            sets += [(k, hnet.get_chunk_embs(k)) for k in range(hnet.num_known_conds)]
    for cond_id, embs in sets:
        for cid, emb in enumerate(embs):
            if init_fct is None:
                emb.normal_(normal_mean, normal_std)
            elif cond_id is None:
                init_fct(emb, cid)
            else:
                init_fct(emb, cid, cond_id=cond_id)
    return None
