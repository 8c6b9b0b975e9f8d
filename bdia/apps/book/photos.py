"""Chapter 5's Stable Diffusion section: the editing methods through a Stable Diffusion pipeline (the miniature one in
the ``ci`` profile, SD 1.5 or SDXL in ``paper``) on real photos that ship with scikit-image and scikit-learn, measured
against the VAE's own reconstruction of each photo (PSNR and SSIM of scikit-image)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ...experiments import relative_error
from ...methods import MethodSpec, get_method
from .editing import control_name, mean_psnr
from .wording import EDIT_SPECS, cap, name_methods, plural, short_name

__all__ = ["PHOTOS", "CONTROL_SPECS", "load_photos", "photo_round_trips", "photo_summary", "photo_verdict", "photo_controlled_edits",
           "controlled_photo_verdict", "pipeline_weights", "as_shown", "plot_photos", "as_uint8"]

#: real photos that ship with scikit-image and scikit-learn, with a source and a target prompt each
PHOTOS = {
    "chelsea": ("skimage", "a photo of a cat", "a photo of a tiger"),
    "astronaut": ("skimage", "a photo of an astronaut", "a photo of a robot"),
    "coffee": ("skimage", "a photo of a cup of coffee", "a photo of a cup of tea"),
    "rocket": ("skimage", "a photo of a rocket", "a photo of a lighthouse"),
    "china": ("sklearn", "a photo of a temple", "a photo of a castle"),
    "flower": ("sklearn", "a photo of a flower", "a photo of a butterfly"),
}

#: the methods whose photo edits run without and with a control: DDIM inversion, Direct Inversion (with it only),
#: null-text inversion (published with prompt-to-prompt) and BDIA at its most damped exact gamma
CONTROL_SPECS = ("ddim", "direct-inversion", "null-text", "bdia:gamma=auto")


def load_photos(names=tuple(PHOTOS)) -> dict:
    """Real photos (``H x W x 3`` uint8 arrays) that ship with scikit-image and scikit-learn, by name."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    sample_images = dict(zip(("china", "flower"), load_sample_images().images))
    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise ValueError(f"unknown photo(s) {', '.join(unknown)}; available: {', '.join(PHOTOS)}")
    return {n: (getattr(skdata, n)() if PHOTOS[n][0] == "skimage" else sample_images[n]) for n in names}


def as_uint8(images) -> np.ndarray:
    """Decoded images (PIL images or arrays) as one ``N x H x W x 3`` uint8 array."""
    return np.stack([np.asarray(image) for image in images])


def photo_round_trips(edit, photos: dict, guidances, specs=EDIT_SPECS, num_steps: int = 20, strength: float = 0.8,
                      latent_dtype=torch.float64, size=None):
    """Invert each photo under its source prompt with each method and guidance, regenerate it, and compare the
    decoded reconstruction with the VAE's own reconstruction of the photo (PSNR and SSIM of scikit-image): the part
    of the loss the inversion adds. Returns ``(table, images)``: per (method, guidance) the mean PSNR and SSIM, the
    forward calls and backward passes per image and this run's seconds per image; ``images`` maps (label, guidance)
    to the decoded reconstructions and edits of the first photo."""
    import pandas as pd
    from skimage.metrics import structural_similarity

    from ...diffusers import encode_image

    names = list(photos)
    prompts = [PHOTOS[n][1] for n in names]
    targets = [PHOTOS[n][2] for n in names]
    latent = torch.cat([encode_image(edit, photos[n], dtype=latent_dtype, size=size) for n in names])
    reference = as_uint8(edit.decode(latent))
    rows, shown = [], {}
    for guidance in guidances:
        for text in specs:
            spec = MethodSpec.parse(text)
            start = time.perf_counter()
            state = edit.invert(latent, prompts, num_steps, strength=strength, guidance_scale=guidance,
                                method=spec.method, latent_dtype=latent_dtype, **spec.options)
            calls = edit.num_network_calls
            rec = edit(inversion=state, output_type="latent").images
            seconds = time.perf_counter() - start
            calls += edit.num_network_calls
            decoded = as_uint8(edit.decode(rec))
            psnr = mean_psnr(torch.from_numpy(decoded.astype(np.float64)), torch.from_numpy(reference.astype(np.float64)),
                         255.0)
            ssim = float(np.mean([structural_similarity(a, b, channel_axis=-1, data_range=255)
                                  for a, b in zip(decoded, reference)]))
            rows.append({"method": spec.label, "guidance": guidance, "PSNR (dB)": psnr, "SSIM": ssim,
                         "latent round-trip error": relative_error(rec, latent),
                         "calls per image": calls, "backward passes": int(state.extras.get("backward_passes", 0)),
                         "seconds per image (this run)": seconds / len(names)})
            edited = edit(targets, inversion=state, output_type="latent").images
            shown[spec.label, guidance] = (edit.decode(rec[:1])[0], edit.decode(edited[:1])[0])
    return pd.DataFrame(rows), shown


def photo_controlled_edits(edit, photos: dict, control, specs, guidance: float, num_steps: int = 20,
                           strength: float = 0.8, latent_dtype=torch.float64, size=None):
    """Edit each photo into its target prompt with each method, without and with ``control`` (a
    :mod:`bdia.diffusers.controls` control), inverting and editing at ``guidance``. Returns ``(table, images)``: per
    (method, control) the edits' mean PSNR against the VAE's reconstruction of their photo (how much of the photo an
    edit keeps, the measure editing papers report as background preservation) and the network calls of the edit
    per image; ``images`` maps (method, control) to the decoded edit of the first photo. A method that edits only
    beside its source branch (Direct Inversion) has no row without the control."""
    import pandas as pd

    from ...diffusers import encode_image

    rows, shown = [], {}
    for text in specs:
        spec = MethodSpec.parse(text)
        scores = {}
        for name, photo in photos.items():  # a control maps one prompt onto one other: a photo a run
            latent = encode_image(edit, photo, dtype=latent_dtype, size=size)
            reference = torch.from_numpy(as_uint8(edit.decode(latent)).astype(np.float64))
            state = edit.invert(latent, PHOTOS[name][1], num_steps, strength=strength, guidance_scale=guidance,
                                method=spec.method, latent_dtype=latent_dtype, **spec.options)
            for applied in ((None, control) if get_method(spec.method).edits_alone else (control,)):
                edited = edit(PHOTOS[name][2], inversion=state, output_type="latent", control=applied).images
                decoded = as_uint8(edit.decode(edited))
                label = "none" if applied is None else control_name(applied)
                psnr = mean_psnr(torch.from_numpy(decoded.astype(np.float64)), reference, 255.0)
                scores.setdefault(label, []).append((psnr, edit.num_network_calls))
                shown.setdefault((spec.label, label), decoded[0])
        for label, values in scores.items():
            rows.append({"method": spec.label, "control": label,
                         "PSNR to the source (dB)": float(np.mean([v[0] for v in values])),
                         "edit calls per image": values[0][1]})
    return pd.DataFrame(rows), shown


def controlled_photo_verdict(table) -> str:
    """For how many methods the control keeps more of the photos (a higher PSNR to the source), and by how much."""
    wide = table.pivot(index="method", columns="control", values="PSNR to the source (dB)")
    control = next(c for c in wide.columns if c != "none")
    both = wide.dropna()
    gain = (both[control] - both["none"]).sort_values()
    kept = gain[gain > 0]
    text = (f"With {control}, the edits keep more of their photo for {len(kept)} of the {len(gain)} methods that also "
            "edit without it")
    if len(kept):
        span = f"{kept.min():.1f}" if len(kept) == 1 else f"{kept.min():.1f} to {kept.max():.1f}"
        text += f" (PSNR to the source up by {span} dB)"
    return text + "."


def photo_summary(table):
    """The photo table for the page: PSNR per guidance, SSIM at guidance 3, the calls and backward passes of a
    round trip per image at guidance 3."""
    order = list(dict.fromkeys(table["method"]))
    psnr = table.pivot(index="method", columns="guidance", values="PSNR (dB)").loc[order]
    psnr.columns = [f"PSNR, w = {g:g}" for g in psnr.columns]
    middle = sorted(set(table["guidance"]))[len(set(table["guidance"])) // 2]
    at = table[table["guidance"] == middle].set_index("method").loc[order]
    return psnr.assign(**{f"SSIM, w = {middle:g}": at["SSIM"], "calls per image": at["calls per image"],
                          "backward passes": at["backward passes"]})


def photo_verdict(table, identical_db: float = 60.0) -> str:
    """Which methods return the VAE's reconstruction of every photo at every guidance, and how far the others fall
    as the guidance grows."""
    worst = table.groupby("method", sort=False)["PSNR (dB)"].min()
    kept = worst[worst >= identical_db].index
    low, high = min(table["guidance"]), max(table["guidance"])
    by = table.set_index(["method", "guidance"])["PSNR (dB)"]
    exact_text = ("every guidance" if len(set(table["guidance"])) > 1 else f"guidance {low:g}")
    if len(kept) == len(worst):
        text = f"Every method returns the VAE's reconstruction of each photo at {exact_text}"
    elif len(kept):
        names = name_methods(kept, worst.index)
        text = (f"{cap(names)} return{'' if plural(names, len(kept)) else 's'} the VAE's reconstruction of each photo "
                f"at {exact_text}")
    else:
        text = "No method returns the VAE's reconstruction of the photos"
    lost = [m for m in worst.index if m not in kept]
    parts = [f"{short_name(m)} stays at {by[m, low]:.1f} dB at every guidance" if abs(by[m, low] - by[m, high]) < 0.05
             else f"{short_name(m)} reaches {by[m, low]:.1f} dB at guidance {low:g} and {by[m, high]:.1f} dB at {high:g}"
             for m in lost]
    if parts:
        text += "; " + "; ".join(parts)
    return text + "."


def pipeline_weights(profile: str, model_id: str) -> str:
    """What the Stable Diffusion section's weights are: the published ones, stand-ins, or the miniature pipeline's."""
    if profile != "paper":
        return "random (miniature pipeline)"
    from ..labels import weights_label

    return weights_label(model_id)


def as_shown(pipe, image, size=None) -> np.ndarray:
    """``image`` as the pipeline sees it (cropped and resized), as an ``H x W x 3`` array in [0, 1] for plotting."""
    from ...diffusers import prepare_image

    return (prepare_image(pipe, image, size=size)[0].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy()


def plot_photos(source, shown, labels, guidance: float, profile: str, stamp: str,
                rows=("reconstruction", "edit")):
    """A photo, and each method's decoded reconstruction and edit at one guidance (``shown[label, guidance]``: the
    two images, None for an empty cell; ``rows`` names them)."""
    import matplotlib.pyplot as plt

    from ..plotting import PAGE_WIDTH, stamp_profile

    cols = len(labels) + 1
    fig, axes = plt.subplots(2, cols, figsize=(PAGE_WIDTH, 2 * PAGE_WIDTH / cols + 0.5))
    axes[0, 0].imshow(source)
    axes[0, 0].set_title("input", fontsize=7)
    axes[1, 0].axis("off")
    for j, label in enumerate(labels, start=1):
        for i, image in enumerate(shown[label, guidance]):
            if image is not None:
                axes[i, j].imshow(image)
        axes[0, j].set_title(short_name(label).replace(" inversion", ""), fontsize=6.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0, 1].set_ylabel(rows[0], fontsize=7)
    axes[1, 1].set_ylabel(rows[1], fontsize=7)
    stamp_profile(fig, profile, stamp)
    return fig
