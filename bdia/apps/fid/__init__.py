"""FID experiments that survive interruption, computed the way EDM computes FID.

* :mod:`~bdia.apps.fid.profiles`: the ``ci`` and ``paper`` profiles, as data;
* :mod:`~bdia.apps.fid.features`: detectors, feature statistics and the Fréchet distance;
* :mod:`~bdia.apps.fid.references`: reference statistics (an ``.npz`` file, an image folder, a hub data set);
* :mod:`~bdia.apps.fid.shards`: the shard store (complete, checksummed shards; the manifest);
* :mod:`~bdia.apps.fid.run`: the configuration and the resumable run (``python -m bdia fid``).

Profiles:

* ``paper``: ``google/ddpm-cifar10-32`` (unconditional DDPM), 3x32x32 images; with ``edm_model``, Heun
  and BDIA-EDM run on an NVlabs EDM checkpoint instead (:func:`load_edm_network`; a class-conditional one with
  random labels, as EDM's ``generate.py`` draws them), else on the DDPM in
  EDM's variables. Features: the TorchScript translation of TF-FID's Inception-v3 that NVlabs' metrics
  use (:func:`load_detector`; 2048-d). Reference (:func:`reference_stats`): an EDM statistics file
  (``.npz`` with ``mu`` and ``sigma``, e.g. EDM's ``cifar10-32x32.npz``), a folder of images, or a hub
  data set (default ``uoft-cs/cifar10``, training split), whose statistics are cached as ``.npz``.
* ``ci``: the digits DDPM shipped with bdia, sampled unconditionally, 1x8x8 images; features: the 64-d
  penultimate layer of the digit classifier shipped with bdia (:func:`digit_detector`); reference: all
  1797 digits. These are digits, not CIFAR10.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_attributes

_EXPORTS = {
    **dict.fromkeys(["DETECTOR_FILE", "DETECTOR_URL", "Detector", "DigitFeatures", "FeatureStats", "digit_detector",
                     "digit_sample_scores", "frechet_distance", "image_stats", "load_detector", "real_subset_spread",
                     "to_uint8"], "features"),
    **dict.fromkeys(["PAPER_MODEL", "PAPER_REFERENCE", "PROFILES", "FIDProfile"], "profiles"),
    "reference_stats": "references",
    **dict.fromkeys(["FIDConfig", "FIDSetup", "EDMNetwork", "WEIGHT_PATTERNS", "config_record", "default_model_id",
                     "fingerprint", "fingerprinted_dir", "load_edm_network", "model_folder", "model_identity",
                     "read_results", "run_fid", "score_shards"], "run"),
    **dict.fromkeys(["ManifestMismatchError", "ShardError", "check_manifest", "read_shard", "shard_metadata",
                     "shard_path", "shard_slug", "write_shard"], "shards"),
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .features import (DETECTOR_FILE, DETECTOR_URL, Detector, DigitFeatures, FeatureStats, digit_detector,
                           digit_sample_scores, frechet_distance, image_stats, load_detector, real_subset_spread,
                           to_uint8)
    from .profiles import PAPER_MODEL, PAPER_REFERENCE, PROFILES, FIDProfile
    from .references import reference_stats
    from .run import (WEIGHT_PATTERNS, EDMNetwork, FIDConfig, FIDSetup, config_record, default_model_id, fingerprint,
                      fingerprinted_dir, load_edm_network, model_folder, model_identity, read_results, run_fid,
                      score_shards)
    from .shards import (ManifestMismatchError, ShardError, check_manifest, read_shard, shard_metadata, shard_path,
                         shard_slug, write_shard)

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS, ("features", "profiles", "references", "run", "shards"))
