"""Bad-input paths not covered by the feature tests: each gives its own clear error."""

import pytest
import torch

import bdia
from bdia.ode import solve_probability_flow
from bdia.schedules import karras_sigmas
from conftest import make_mixture


def test_schedule_inputs():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        bdia.VPSchedule([0.9, 1.0])
    with pytest.raises(ValueError, match="strictly decreasing"):
        bdia.VPSchedule([0.5, 0.9])
    with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max"):
        karras_sigmas(10, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="need 0 < sigma_min < sigma_max"):
        bdia.EDMSchedule(sigma_min=0.0)
    with pytest.raises(ValueError, match="timestep_spacing 'karras' is not supported"):
        bdia.VPSchedule.from_diffusers_config({"timestep_spacing": "karras"})


def test_sampler_inputs(sd_schedule):
    model = make_mixture(3).eps_model(sd_schedule)
    x0 = make_mixture(3).sample(4)
    with pytest.raises(ValueError, match="must have a batch dimension"):
        bdia.sample(model, torch.tensor(1.0, dtype=torch.float64), sd_schedule, 5, "ddim")
    state = bdia.invert(model, x0, sd_schedule, 5, "bdia")
    one = bdia.InversionState("bdia", 5, state.options, state.timesteps, state.latents[:1], state.shape, state.levels)
    with pytest.raises(ValueError, match="a 'bdia' inversion state holds 2 latent"):
        bdia.sample(model, one, sd_schedule, 5, "bdia")
    mixed = bdia.InversionState("bdia", 5, state.options, state.timesteps,
                                (state.latents[0], state.latents[1].float()), state.shape, state.levels)
    with pytest.raises(ValueError, match="must share dtype and device"):
        bdia.sample(model, mixed, sd_schedule, 5, "bdia")


def test_reference_solution_inputs(sd_schedule):
    model = make_mixture(2).eps_model(sd_schedule)
    z = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="s_floor=.* must be below"):
        solve_probability_flow(model, z, sd_schedule, 0.0, -1.0, s_floor=10.0)
    with pytest.raises(ValueError, match="t_eval must not include the data end"):
        solve_probability_flow(model, z, sd_schedule, 999.0, -1.0, t_eval=[500.0, -1.0])


def test_diffusers_adapter_inputs():
    pytest.importorskip("diffusers")
    from bdia.diffusers import BDIAInverseScheduler, BDIAScheduler, StableDiffusionEpsModel, encode_image
    from bdia.diffusers import tiny_stable_diffusion

    pipe = tiny_stable_diffusion()
    with pytest.raises(ValueError, match=r"an image array must be \(H, W\), \(H, W, 3\) or \(H, W, 4\)"):
        encode_image(pipe, torch.zeros(2, 2, 2, 2).numpy())
    with pytest.raises(ValueError, match=r"an image tensor must be \(3, H, W\) or \(B, 3, H, W\)"):
        encode_image(pipe, torch.zeros(1, 4, 32, 32))
    model = StableDiffusionEpsModel(pipe, ["a cat", "a dog"])
    with pytest.raises(ValueError, match="2 prompts for a batch of 3 latents"):
        model(torch.zeros(3, 4, 8, 8), 500.0)
    sample_pipe = tiny_stable_diffusion(prediction_type="sample")
    with pytest.raises(ValueError, match="predicts 'sample'; only 'epsilon'"):
        StableDiffusionEpsModel(sample_pipe, "a cat")
    with pytest.raises(ValueError, match="prediction_type must be 'epsilon', 'v_prediction' or 'sample'"):
        BDIAScheduler(prediction_type="x0")
    with pytest.raises(ValueError, match="timestep_spacing 'karras' is not supported"):
        BDIAScheduler(timestep_spacing="karras")
    scheduler = BDIAScheduler.from_config(pipe.scheduler.config, gamma=1.0)
    with pytest.raises(ValueError, match=r"call set_timesteps\(num_inference_steps\) before step"):
        scheduler.step(torch.zeros(1, 4, 8, 8), 981, torch.zeros(1, 4, 8, 8))
    scheduler.set_timesteps(2)
    z = torch.zeros(1, 4, 8, 8)
    for t in scheduler.timesteps:
        z = scheduler.step(torch.zeros_like(z), t, z).prev_sample
    state = bdia.invert(lambda x, t: torch.zeros_like(x), torch.zeros(1, 4, 8, 8, dtype=torch.float64),
                        bdia.diffusers.schedule_from_scheduler(pipe.scheduler), 4, "bdia", gamma=0.96)
    with pytest.raises(ValueError, match="option mismatch: the state was inverted with gamma=0.96"):
        scheduler.resume_from(state)
    with pytest.raises(ValueError, match="resumes 'bdia' inversions only"):
        scheduler.resume_from(bdia.invert(lambda x, t: torch.zeros_like(x), torch.zeros(1, 4, 8, 8),
                                          bdia.diffusers.schedule_from_scheduler(pipe.scheduler), 4, "edict"))
    resumed = BDIAScheduler.from_config(pipe.scheduler.config, gamma=0.96)
    resumed.resume_from(state)
    with pytest.raises(ValueError, match="step count mismatch: the state was inverted with num_steps=4"):
        resumed.set_timesteps(5)
    inverse = BDIAInverseScheduler.from_config(pipe.scheduler.config, gamma=1.0)
    inverse.set_timesteps(3)
    with pytest.raises(ValueError, match="the inversion is not finished"):
        inverse.inversion_state()


def test_fid_and_bench_inputs(tmp_path):
    import pickle

    from bdia.apps import bench, fid

    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        fid.FIDConfig(out_dir=tmp_path, num_samples=1)
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        bench.run_benchmark(models=["gmm2d"], repeats=0, progress=False)
    # an EDM checkpoint whose images do not match the DDPM's
    from diffusers import UNet2DModel

    from test_fid import FakeEDM

    torch.manual_seed(0)
    UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
                layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "unet")
    from diffusers import DDPMScheduler

    DDPMScheduler().save_config(tmp_path / "unet")
    with open(tmp_path / "edm.pkl", "wb") as f:
        pickle.dump({"ema": FakeEDM()}, f)
    with pytest.raises(ValueError, match=r"the EDM model makes \(3, 8, 8\) images, the DDPM \(3, 16, 16\)"):
        fid.FIDSetup(fid.FIDConfig(out_dir=tmp_path / "o", profile="paper", model=str(tmp_path / "unet"),
                                   edm_model=str(tmp_path / "edm.pkl")))
