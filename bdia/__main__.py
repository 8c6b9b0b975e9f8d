"""Command line: ``python -m bdia COMMAND`` (also installed as ``bdia``).

Commands:
  demo          invert and reconstruct samples of an exact Gaussian mixture with every method, print errors and calls
  train-digits  train the class-conditional digits DDPM that the ci profile ships (bdia/weights/digits-unet)
  fid           sample with each method and call budget (resumable shards) and compute Frechet distances
  bench         network calls, wall time, memory and round-trip error per method, model, dtype and step count
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    import torch

    import bdia
    from bdia.toy import GaussianMixture

    schedule = bdia.VPSchedule.stable_diffusion()
    gen = torch.Generator().manual_seed(args.seed)
    mixture = GaussianMixture(torch.randn(5, args.dim, generator=gen, dtype=torch.float64), std=0.2)
    print(f"profile: ci (exact {args.dim}-D Gaussian mixture, Stable Diffusion schedule, {args.steps} steps)")
    print(f"{'method':<14}{'dtype':<9}{'calls':>7}{'round-trip rel. error':>24}")
    data = mixture.sample(args.batch, generator=gen)
    for method, opts in [("ddim", {}), ("edict", {}), ("bdia", {"gamma": 1.0}), ("bdia", {"gamma": 0.96}),
                         ("obelm", {}), ("bdia-edm", {"gamma": 1.0})]:
        for dtype in (torch.float32, torch.float64):
            model = bdia.CountingModel(mixture.eps_model(schedule))
            x0 = data.to(dtype)
            state = bdia.invert(model, x0, schedule, args.steps, method, **opts)
            rec = bdia.sample(model, state, schedule, args.steps, method)
            err = ((rec - x0).double().norm() / x0.double().norm()).item()
            label = method + (f"({opts['gamma']})" if opts else "")
            print(f"{label:<14}{str(dtype).removeprefix('torch.'):<9}{model.calls:>7}{err:>24.2e}")
    return 0


def _train_digits(args: argparse.Namespace) -> int:
    import json
    import platform
    import time

    import torch

    from bdia.digits import train_diffusion_model

    start = time.perf_counter()
    model = train_diffusion_model(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  progress=True)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    record = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "seconds": round(seconds, 1), "torch": torch.__version__, "machine": platform.machine(),
              "threads": torch.get_num_threads()}
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved to {args.out} after {seconds:.0f} s")
    return 0


def _fid(args: argparse.Namespace) -> int:
    from bdia.diffusers import ModelNotAvailableError
    from bdia.fid import FIDConfig, run_fid

    try:
        cfg = FIDConfig(out_dir=args.out, profile=args.profile, methods=args.methods, budgets=args.calls,
                        num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed, model=args.model,
                        edm_model=args.edm_model, device=args.device)
        rows = run_fid(cfg)
    except (ModelNotAvailableError, ValueError, OSError, ModuleNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if rows:
        print(f"profile: {cfg.profile} ({'digits, not CIFAR10' if cfg.profile == 'ci' else 'CIFAR10'}), "
              f"{cfg.num_samples} samples per row")
        for row in rows:
            print(f"{row['label']:<22} budget {row['budget']:>3} calls ({row['steps']:>3} steps)  FID {row['fid']:.4g}")
        print(f"results: {cfg.out_dir / 'results.csv'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bdia.bench import run_benchmark, write_results

    try:
        rows = run_benchmark(models=args.models, methods=args.methods, dtypes=args.dtypes, step_counts=args.steps,
                             repeats=args.repeats, device=args.device, network_dtype=args.network_dtype)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = write_results(rows, args.out, device=args.device, note=args.note)
    print(f"{'model':<13}{'dtype':<9}{'N':>4}  {'method':<16}{'calls':>6}{'time/DDIM':>11}{'sampler/step':>14}"
          f"{'error':>10}")
    for r in rows:
        print(f"{r['model']:<13}{r['dtype']:<9}{r['steps']:>4}  {r['label']:<16}{r['calls']:>6}"
              f"{r['time_ratio_to_ddim']:>11.2f}{r['sampler_overhead_per_step']:>14.3f}{r['round_trip_error']:>10.1e}")
    print(f"results: {path} and {path.with_suffix('.csv')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bdia", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="round trips of every method on an exact Gaussian mixture")
    demo.add_argument("--steps", type=int, default=50)
    demo.add_argument("--dim", type=int, default=2)
    demo.add_argument("--batch", type=int, default=256)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    train = sub.add_parser("train-digits", help="train the shipped digits DDPM (minutes on 2 CPU cores)")
    train.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / "digits-unet")
    train.add_argument("--steps", type=int, default=2500)
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train_digits)
    fid = sub.add_parser("fid", help="FID per method and network-call budget (resumes after an interruption)")
    fid.add_argument("--profile", choices=["ci", "paper"], default="ci")
    fid.add_argument("--methods", nargs="+", default=["ddim", "bdia:gamma=0.5", "heun", "bdia-edm:gamma=0.1"],
                     help="methods with options, e.g. ddim bdia:gamma=0.5 edict:p=0.93")
    fid.add_argument("--calls", nargs="+", type=int, default=[10, 20], help="network-call budgets per sample")
    fid.add_argument("--num-samples", type=int, default=2000)
    fid.add_argument("--batch-size", type=int, default=500)
    fid.add_argument("--out", type=Path, default=Path("outputs/fid"))
    fid.add_argument("--model", default=None, help="model id or folder (default: the profile's model)")
    fid.add_argument("--edm-model", default=None,
                     help="an NVlabs EDM checkpoint (.pkl) for heun and bdia-edm (needs NVlabs' code to unpickle)")
    fid.add_argument("--device", default="cpu")
    fid.add_argument("--seed", type=int, default=0)
    fid.set_defaults(func=_fid)
    bench = sub.add_parser("bench", help="cost and exactness of each method (calls, time ratios, memory, error)")
    bench.add_argument("--models", nargs="+", default=["gmm2d", "digits-unet", "tiny-sd"],
                       help="gmm2d digits-ideal digits-unet tiny-sd sd-unet")
    bench.add_argument("--methods", nargs="+", default=["ddim", "edict", "bdia:gamma=1.0", "bdia:gamma=0.96", "obelm"])
    bench.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    bench.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50, 100])
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--network-dtype", default="float32",
                       choices=["latent", "float16", "bfloat16", "float32", "float64"],
                       help="dtype of the networks; 'latent': the dtype of each row's latents (default: %(default)s)")
    bench.add_argument("--out", type=Path, default=Path("outputs/bench/results.json"))
    bench.add_argument("--note", default="")
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
