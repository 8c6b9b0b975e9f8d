"""Chapter 7's photo edits through Stable Diffusion 3 and FLUX: each method inverts a photo under a prompt that
describes it and regenerates it under a target prompt; the edit is scored as the field scores one, by how much
of its photo it keeps (PSNR, SSIM and LPIPS of the decoded edit against the VAE's reconstruction of the photo;
no masks, so the whole image stands for the background) and by how well it reads as its prompt (CLIP score)."""

from __future__ import annotations

import numpy as np
import torch

from ...experiments import relative_error
from ...methods import MethodSpec, get_method
from . import join_names
from .editing import control_name, mean_psnr
from .flow_editing import flow_name
from .photos import PHOTOS, as_uint8

__all__ = ["UNEDITED", "EXACT", "photo_flow_edits", "photo_flow_summary", "photo_flow_verdict"]

#: the row of the photos themselves (the VAE's reconstruction), whose CLIP score to the target prompts is the mark
#: an edit has to rise above
UNEDITED = "no edit (the photo)"
#: the latent round-trip error (relative) under which an edit counts as exact
EXACT = 1e-6


def photo_flow_edits(edit, photos: dict, specs, scorer, lpips, guidance: float, num_steps: int = 28,
                     strength: float = 0.75, control=None, control_specs=(), latent_dtype=torch.float64, size=None,
                     prompts: dict | None = None):
    """Invert each photo (``photos``: name to image, prompts from :data:`~bdia.apps.book.photos.PHOTOS`) under its
    source prompt with each method of ``specs``, regenerate it, and edit it into its target prompt; the methods of
    ``control_specs`` edit the same inversion again under ``control``.

    Returns ``(table, shown)``: per method the edits' mean PSNR, SSIM and LPIPS (``lpips``, a
    :class:`~bdia.apps.lpips.LPIPS`) against the VAE's reconstruction of their photo, their mean CLIP score
    (``scorer``, a :class:`~bdia.apps.clip_score.ClipScorer`) to the target prompt, the worst latent round-trip
    error and the calls per photo (inversion and edit; FlowEdit, which does not invert, has no round trip), with a
    first row for the photos themselves; ``shown`` maps each method to the decoded edit of the first photo.
    ``prompts`` (name to ``(source, target)``) replaces the photos' own prompts."""
    import pandas as pd
    from skimage.metrics import structural_similarity

    from ...diffusers import encode_image

    runs = [(text, None) for text in specs] + [(text, control) for text in control_specs]
    scores, shown, unedited = {}, {}, []
    for name, photo in photos.items():
        prompt, target = (prompts or {}).get(name) or PHOTOS[name][1:]
        latent = encode_image(edit.pipe, photo, dtype=latent_dtype, size=size)
        reference = as_uint8(edit.decode(latent))
        unedited.append(scorer(reference, target)[0])
        inversions = {}  # spec -> (state, its calls, round trip): a controlled edit reuses the plain one's
        for text, applied in runs:
            spec = MethodSpec.parse(text)
            label = spec.label if applied is None else f"{spec.label} + {control_name(applied)}"
            if text not in inversions:
                state = edit.invert(latent, prompt, num_steps, strength=strength, guidance_scale=guidance,
                                    method=spec.method, latent_dtype=latent_dtype, **spec.options)
                calls, trip = edit.num_network_calls, np.nan  # FlowEdit does not invert: it has no round trip
                if not get_method(spec.method).edits_beside_source:
                    trip = relative_error(edit(inversion=state, output_type="latent").images, latent)
                inversions[text] = state, calls, trip
            state, calls, trip = inversions[text]
            edited = edit(target, inversion=state, output_type="latent", control=applied).images
            calls += edit.num_network_calls
            decoded = as_uint8(edit.decode(edited))
            ssim = structural_similarity(decoded[0], reference[0], channel_axis=-1, data_range=255)
            psnr = mean_psnr(torch.from_numpy(decoded.astype(np.float64)),
                             torch.from_numpy(reference.astype(np.float64)), 255.0)
            distance = lpips.distance(decoded, reference)[0]
            scores.setdefault(label, []).append((psnr, ssim, distance, scorer(decoded, target)[0], trip, calls))
            shown.setdefault(label, decoded[0])
    rows = [{"method": UNEDITED, "PSNR to the source (dB)": np.inf, "SSIM to the source": 1.0,
             "LPIPS to the source": 0.0, "CLIP score (target)": float(np.mean(unedited)),
             "latent round-trip error": np.nan, "calls per photo": 0}]
    for label, values in scores.items():
        psnr, ssim, distance, clip, trip, calls = zip(*values)
        rows.append({"method": label, "PSNR to the source (dB)": float(np.mean(psnr)),
                     "SSIM to the source": float(np.mean(ssim)), "LPIPS to the source": float(np.mean(distance)),
                     "CLIP score (target)": float(np.mean(clip)),
                     "latent round-trip error": float(np.max(trip)), "calls per photo": calls[0]})
    return pd.DataFrame(rows), shown


def photo_flow_summary(tables: dict):
    """The page's table: per method, the CLIP score and the PSNR and LPIPS to the source under each model (``tables``: model
    name to :func:`photo_flow_edits`' table), then the round trip's worst error over the models and the calls."""
    import pandas as pd

    columns = {}
    for model, table in tables.items():
        indexed = table.set_index("method")
        columns[f"{model} CLIP"] = indexed["CLIP score (target)"]
        columns[f"{model} PSNR (dB)"] = indexed["PSNR to the source (dB)"]
        columns[f"{model} LPIPS"] = indexed["LPIPS to the source"]
    first = next(iter(tables.values())).set_index("method")
    worst = pd.concat([t.set_index("method")["latent round-trip error"] for t in tables.values()], axis=1).max(axis=1)
    return pd.DataFrame(columns).assign(**{"round trip": worst, "calls per photo": first["calls per photo"]})


def _beats(a, b) -> bool:
    """Whether edit ``a`` reads more as its prompt and keeps more of its photo than ``b``."""
    return a["CLIP score (target)"] > b["CLIP score (target)"] and \
        a["PSNR to the source (dB)"] > b["PSNR to the source (dB)"]


def photo_flow_verdict(tables: dict, exact: float = EXACT) -> str:
    """Per model: the exact edit that reads most as its prompt (the highest CLIP score among the methods whose round
    trip is within ``exact``), held against every inexact method on both axes (a higher CLIP score and a higher PSNR
    to the source), and how far the edits rise above the unedited photos' CLIP score."""
    sentences = []
    for model, table in tables.items():
        rows = table.set_index("method")
        edits = rows.drop(index=UNEDITED)
        exact_rows = edits[edits["latent round-trip error"] <= exact]
        rivals = edits[~(edits["latent round-trip error"] <= exact)]
        base = rows.loc[UNEDITED, "CLIP score (target)"]
        if exact_rows.empty:
            sentences.append(f"Through {model} no method edits exactly (round trip within {exact:g}).")
            continue
        best_label = exact_rows["CLIP score (target)"].idxmax()
        best = exact_rows.loc[best_label]
        text = (f"Through {model}, of the exact edits {flow_name(best_label)}'s reads most as its prompt: CLIP "
                f"score {best['CLIP score (target)']:.1f} (the unedited photos score {base:.1f}) at "
                f"a PSNR of {best['PSNR to the source (dB)']:.1f} dB to its photo (LPIPS {best['LPIPS to the source']:.2f})")
        won = [flow_name(label) for label, row in rivals.iterrows() if _beats(best, row)]
        lost = [flow_name(label) for label, row in rivals.iterrows() if _beats(row, best)]
        mixed = [flow_name(label) for label in rivals.index
                 if flow_name(label) not in won and flow_name(label) not in lost]
        parts = ([f"it beats {join_names(won)} on both axes"] if won else []) + \
                ([f"{join_names(lost)} beat{'' if len(lost) > 1 else 's'} it on both"] if lost else []) + \
                ([f"against {join_names(mixed)} it wins on one axis and loses on the other"] if mixed else [])
        sentences.append(text + (": " + "; ".join(parts) if parts else "") + ".")
    return " ".join(sentences)
