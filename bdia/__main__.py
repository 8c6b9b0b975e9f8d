"""Command line: ``python -m bdia COMMAND`` (also installed as ``bdia``).

Commands:
  demo    invert and reconstruct samples of an exact Gaussian mixture with every method, print errors and calls
"""

from __future__ import annotations

import argparse
import sys


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bdia", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="round trips of every method on an exact Gaussian mixture")
    demo.add_argument("--steps", type=int, default=50)
    demo.add_argument("--dim", type=int, default=2)
    demo.add_argument("--batch", type=int, default=256)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
