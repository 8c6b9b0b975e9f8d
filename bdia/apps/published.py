"""The published models the ``paper`` profile loads: their hub ids, their configurations as published in the
repositories' config files (diffusers / transformers layout), the weight files each repository holds, and where
each value was read (:data:`SOURCES`; the tests check the fields that decide the architecture).

:mod:`bdia.apps.standins` writes these architectures with random weights for the offline dry run; the GPU check
builds them in place; FID loads the published detector by its file name.
"""

from __future__ import annotations

__all__ = ["SD_MODEL", "CIFAR10_MODEL", "SD35_MEDIUM_MODEL", "FLUX_DEV_MODEL", "DETECTOR_FILE", "SD_UNET", "SD_VAE",
           "SD_TEXT_ENCODER", "SD_TOKENIZER", "SD_SCHEDULER", "SD_FEATURE_EXTRACTOR", "SD_MODEL_INDEX",
           "SD_SAFETY_CHECKER", "CIFAR10_UNET", "CIFAR10_SCHEDULER", "CIFAR10_MODEL_INDEX", "WEIGHT_FORMATS",
           "SD35_MEDIUM_TRANSFORMER", "SD35_MEDIUM_SCHEDULER", "SD35_MEDIUM_VAE", "FLUX_DEV_TRANSFORMER",
           "FLUX_DEV_SCHEDULER", "FLUX_DEV_VAE", "CLIP_MODEL", "CLIP_CONFIG", "CLIP_PREPROCESSOR", "SOURCES",
           "REPOSITORIES"]

SD_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CIFAR10_MODEL = "google/ddpm-cifar10-32"
DETECTOR_FILE = "inception-2015-12-05.pt"

SD_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
SD_VAE = {
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD_TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 768,
    "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "projection_dim": 768, "attention_dropout": 0.0,
    "dropout": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 2,
    "pad_token_id": 1,
}
SD_TOKENIZER = {
    "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace",
    "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>", "add_prefix_space": False,
}
SD_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}
SD_FEATURE_EXTRACTOR = {
    "image_processor_type": "CLIPImageProcessor", "crop_size": 224, "do_center_crop": True, "do_normalize": True,
    "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224,
}
SD_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"], "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}
CIFAR10_UNET = {
    "_class_name": "UNet2DModel", "act_fn": "silu", "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"], "downsample_padding": 0,
    "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2, "mid_block_scale_factor": 1,
    "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
CIFAR10_SCHEDULER = {
    "_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "num_train_timesteps": 1000, "clip_sample": True, "trained_betas": None, "variance_type": "fixed_large",
}
SD_SAFETY_CHECKER = {
    "architectures": ["StableDiffusionSafetyChecker"], "model_type": "clip", "projection_dim": 768,
    "logit_scale_init_value": 2.6592, "initializer_factor": 1.0,
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
                    "max_position_embeddings": 77, "vocab_size": 49408},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                      "num_hidden_layers": 24, "patch_size": 14, "image_size": 224},
}
# The CLIP that scores edits against their prompts (chapter 7's paper profile): ViT-L/14, whose vision tower is also
# Stable Diffusion 1.5's safety checker and whose text tower is its text encoder.
CLIP_MODEL = "openai/clip-vit-large-patch14"
CLIP_CONFIG = {
    "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 768, "logit_scale_init_value": 2.6592,
    "initializer_factor": 1.0,
    "text_config": {k: SD_TEXT_ENCODER[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                                    "num_hidden_layers", "max_position_embeddings", "vocab_size",
                                                    "hidden_act", "projection_dim", "bos_token_id",
                                                    "eos_token_id", "pad_token_id")},
    "vision_config": {**SD_SAFETY_CHECKER["vision_config"], "hidden_act": "quick_gelu", "projection_dim": 768},
}
CLIP_PREPROCESSOR = {**SD_FEATURE_EXTRACTOR, "feature_extractor_type": "CLIPFeatureExtractor"}
#: which weight files each repository holds: float32 safetensors with an fp16 variant (SD 1.5), or a float32
#: pickle with the legacy attention key names (the CIFAR10 DDPM, published before diffusers renamed them)
WEIGHT_FORMATS = {"stable-diffusion-v1-5/stable-diffusion-v1-5": "safetensors+fp16",
                  "google/ddpm-cifar10-32": "legacy-bin", CLIP_MODEL: "safetensors"}
CIFAR10_MODEL_INDEX = {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"],
                       "unet": ["diffusers", "UNet2DModel"]}

# The rectified-flow models of chapter 7's paper profile: their transformers are too large to write as stand-ins
# here (2.5 and 12 billion parameters), so tests build them from these configs on PyTorch's meta device instead.
SD35_MEDIUM_MODEL = "stabilityai/stable-diffusion-3.5-medium"
FLUX_DEV_MODEL = "black-forest-labs/FLUX.1-dev"
SD35_MEDIUM_TRANSFORMER = {
    "_class_name": "SD3Transformer2DModel", "attention_head_dim": 64, "caption_projection_dim": 1536,
    "dual_attention_layers": list(range(13)), "in_channels": 16, "joint_attention_dim": 4096,
    "num_attention_heads": 24, "num_layers": 24, "out_channels": 16, "patch_size": 2, "pooled_projection_dim": 2048,
    "pos_embed_max_size": 384, "qk_norm": "rms_norm", "sample_size": 128,
}
SD35_MEDIUM_SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
SD35_MEDIUM_VAE = {"latent_channels": 16, "scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_DEV_TRANSFORMER = {
    "_class_name": "FluxTransformer2DModel", "attention_head_dim": 128, "axes_dims_rope": [16, 56, 56],
    "guidance_embeds": True, "in_channels": 64, "joint_attention_dim": 4096, "num_attention_heads": 24,
    "num_layers": 19, "num_single_layers": 38, "patch_size": 1, "pooled_projection_dim": 768,
}
FLUX_DEV_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256, "base_shift": 0.5,
    "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
    "use_dynamic_shifting": True,
}
FLUX_DEV_VAE = {"latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159}

SOURCES = {
    SD_MODEL: ("unet/config.json, vae/config.json, text_encoder/config.json, tokenizer/tokenizer_config.json, "
               "scheduler/scheduler_config.json and model_index.json of the Hugging Face repository "
               "stable-diffusion-v1-5/stable-diffusion-v1-5 (formerly runwayml/stable-diffusion-v1-5), as "
               "summarised in this project's notes on the reference methods and cross-checked against public "
               "copies (open-mmlab/mmagic configs/stable_diffusion, diffusers-rs unet config for v1.5). The VAE's "
               "scaling_factor 0.18215 is diffusers' default, which the published config predates. The "
               "tokenizer's vocabulary has the published size (49408 = 256 bytes + 256 word-final bytes + "
               "48894 merges + 2 specials) with synthetic merges: it is not CLIP's vocabulary. Each weight file is "
               "float32 safetensors with an fp16 variant beside it, as in the repository; the safety checker "
               "(a CLIP ViT-L/14 vision tower, safety_checker/config.json) is written too, though the paper code "
               "loads the pipeline with safety_checker=None."),
    CIFAR10_MODEL: ("config.json, scheduler_config.json (variance_type fixed_large, clip_sample true) and "
                    "model_index.json of the Hugging Face repository google/ddpm-cifar10-32, cross-checked against a "
                    "public copy of its UNet config; its weights are a float32 pickle, diffusion_pytorch_model.bin, "
                    "with the attention key names of early diffusers (query, key, value, proj_attn)."),
    SD35_MEDIUM_MODEL: ("transformer/config.json, scheduler/scheduler_config.json and the VAE factors of the Hugging "
                        "Face repository stabilityai/stable-diffusion-3.5-medium (MMDiT-X: 24 layers, dual attention "
                        "in layers 0-12, QK RMS norm), cross-checked against public re-implementations of SD3.5 Medium."),
    FLUX_DEV_MODEL: ("transformer/config.json, scheduler/scheduler_config.json and the VAE factors of the Hugging Face "
                     "repository black-forest-labs/FLUX.1-dev (19 double and 38 single blocks, 3072 = 24 x 128 hidden, "
                     "rope axes 16/56/56, guidance embedding), cross-checked against Black Forest Labs' flux-dev "
                     "parameters as public re-implementations state them."),
    CLIP_MODEL: ("config.json, preprocessor_config.json and tokenizer_config.json of the Hugging Face repository "
                 "openai/clip-vit-large-patch14: a 12-layer, 768-wide text tower (the text encoder of Stable "
                 "Diffusion 1.5) and a 24-layer, 1024-wide ViT-L/14 vision tower at 224 x 224 (its safety "
                 "checker's), both projected to 768, quick-GELU; weights as float32 model.safetensors. The "
                 "tokenizer is the stand-in one of Stable Diffusion 1.5 (published size, synthetic merges)."),
    "detector": ("call signature of NVlabs' TorchScript translation of TF-FID's Inception-v3 "
                 "(stylegan2-ada-pytorch metrics/inception-2015-12-05.pt; EDM's fid.py uses the same network "
                 "as a pickle): uint8 images (N, 3, H, W) in, (N, 2048) float32 features out with "
                 "return_features=True. The stand-in is a random projection, not Inception."),
}

REPOSITORIES = {
    SD_MODEL: {"model_index.json": SD_MODEL_INDEX, "unet": SD_UNET, "vae": SD_VAE, "text_encoder": SD_TEXT_ENCODER,
               "tokenizer": SD_TOKENIZER, "scheduler": SD_SCHEDULER, "feature_extractor": SD_FEATURE_EXTRACTOR,
               "safety_checker": SD_SAFETY_CHECKER},
    CIFAR10_MODEL: {"model_index.json": CIFAR10_MODEL_INDEX, ".": CIFAR10_UNET, "scheduler": CIFAR10_SCHEDULER},
    # a transformers repository: model, tokenizer and preprocessor side by side at the top level (keys from ".")
    CLIP_MODEL: {".": CLIP_CONFIG, ".tokenizer": SD_TOKENIZER, ".preprocessor": CLIP_PREPROCESSOR},
}
