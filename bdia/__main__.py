"""Command line: ``python -m bdia COMMAND`` (also installed as ``bdia``).

Commands:
  demo              invert and reconstruct samples of an exact Gaussian mixture with every method, print errors and calls
  fid               sample with each method and call budget (resumable shards) and compute Frechet distances
  bench             network calls, wall time, memory and round-trip error per method, model, dtype and step count
  standins          write the paper profile's models with their published configs and random weights (offline)
  train-digits      train the class-conditional digits DDPM that the ci profile ships
  train-digits-flow train the class-conditional digits rectified flow that the ci profile ships
  train-classifier  train the digit classifier whose features score the ci profile's FID

User errors (:class:`bdia.UsageError`: bad options, missing models or files, unwritable folders) end with a
one-line message and exit status 2; Ctrl-C ends with status 130; anything else is a bug and keeps its
traceback. ``bdia --help`` imports no PyTorch: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bdia.errors import UsageError


def _positive(name: str, least: int = 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{name} must be at least {least}, got {value}")
        return value

    return parse


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"device {text!r} does not exist: this machine has "
                                         f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported; use cpu or cuda")
    return text


def _method(text: str):
    from bdia.methods import MethodSpec

    try:
        return MethodSpec.parse(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(f"method spec {text!r} is malformed: {error}") from None


def _demo(args: argparse.Namespace) -> int:
    import torch

    import bdia
    from bdia.toy import GaussianMixture

    schedule = bdia.VPSchedule.scaled_linear()
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


def _shipped_weights_guard(out: Path, shipped: Path, overwrite: bool) -> None:
    if out.resolve() == shipped.resolve() and not overwrite:
        raise UsageError(f"{out} holds the weights that ship with bdia; pass --overwrite-shipped to replace them")


def _train_digits(args: argparse.Namespace) -> int:
    import json
    import platform
    import time

    import torch

    from bdia.apps import digits

    flow = args.command == "train-digits-flow"
    shipped = digits.shipped_flow_model_path() if flow else digits.shipped_model_path()
    _shipped_weights_guard(args.out, shipped, args.overwrite_shipped)
    train = digits.train_flow_model if flow else digits.train_diffusion_model
    start = time.perf_counter()
    model = train(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=True)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    record = {"command": f"python -m bdia {args.command} " + " ".join(sys.argv[2:]), "steps": args.steps,
              "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "seconds": round(seconds, 1),
              "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads()}
    if flow:
        record["samples"] = _flow_samples_scored(model, args.seed)
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved to {args.out} after {seconds:.0f} s")
    if flow:
        scores = record["samples"]
        print(f"{scores['num_samples']} samples ({scores['method']}, {scores['steps']} steps): "
              f"{scores['read as their label']:.1%} read as their label, Fréchet distance "
              f"{scores['frechet distance to the digits']:.2f} to the digits")
    return 0


def _flow_samples_scored(unet, seed: int, per_class: int = 100, steps: int = 20) -> dict:
    """The training record's check of a flow model: Euler samples, unguided, scored by the shipped classifier."""
    import torch

    import bdia
    from bdia.apps import digits
    from bdia.apps.fid.features import digit_sample_scores
    from bdia.diffusers import UNetVelocityModel

    labels = torch.arange(digits.NUM_CLASSES).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    model = UNetVelocityModel(unet, labels, num_train_timesteps=digits.FLOW_TRAIN_TIMESTEPS)
    samples = bdia.sample(model, noise, bdia.FlowMatchSchedule(), steps, "ddim")
    scores = digit_sample_scores(samples, labels)
    return {"method": "euler", "steps": steps, "guidance": 1.0, "seed": seed,
            **{key: value for key, value in scores.items() if key != "reference"}}


def _train_classifier(args: argparse.Namespace) -> int:
    import platform
    import time

    import torch

    from bdia.apps.digits import save_classifier, shipped_classifier_path, train_classifier

    _shipped_weights_guard(args.out, shipped_classifier_path(), args.overwrite_shipped)
    start = time.perf_counter()
    model, accuracy = train_classifier(seed=args.seed, epochs=args.epochs, progress=True)
    seconds = time.perf_counter() - start
    record = {"command": "python -m bdia train-classifier " + " ".join(sys.argv[2:]), "seed": args.seed,
              "epochs": args.epochs, "test_accuracy": round(accuracy, 4), "seconds": round(seconds, 1),
              "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads()}
    save_classifier(model, accuracy, args.out, record)
    print(f"test accuracy {accuracy:.1%}; saved to {args.out} after {seconds:.0f} s")
    return 0


def _standins(args: argparse.Namespace) -> int:
    from bdia.apps.standins import write_standins

    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create {args.out}: {error.strerror or error}") from None
    paths = write_standins(args.out, seed=args.seed)
    print("stand-in weights (published architectures, random weights; their images and scores mean nothing) in",
          paths["hub_cache"])
    print("use them with:\n  " + " ".join(f"{k}={v}" for k, v in paths["environment"].items()))
    print(f"stand-in FID reference images: {paths['reference']}")
    return 0


def _fid(args: argparse.Namespace) -> int:
    from bdia.apps.fid import PROFILES, FIDConfig, run_fid

    cfg = FIDConfig(out_dir=args.out, profile=args.profile, methods=args.methods, budgets=args.calls,
                    num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed, model=args.model,
                    edm_model=args.edm_model, detector=args.detector, reference=args.reference, device=args.device,
                    follow_clipping=args.follow_clipping)
    try:
        rows = run_fid(cfg)
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume (finished shards are kept)", file=sys.stderr)
        return 130
    if rows:
        kind = PROFILES[cfg.profile].data
        weights = sorted({r["weights"] for r in rows} | {r["detector_weights"] for r in rows})
        print(f"profile: {cfg.profile} ({kind}), {cfg.num_samples} samples per row; weights: {', '.join(weights)}")
        for row in rows:
            print(f"{row['label']:<22} budget {row['budget']:>3} calls ({row['steps']:>3} steps)  FID {row['fid']:.4g}")
        print(f"results: {cfg.out_dir / 'results.csv'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bdia.apps.suites import suite_grid

    if args.suite == "gpu":
        from bdia.apps.gpu import run_gpu_suite

        return run_gpu_suite(args.out, device=args.device, smoke=args.smoke, note=args.note)
    if args.smoke:
        raise UsageError("--smoke belongs to --suite gpu (the GPU check at tiny sizes on the CPU)")
    from bdia.apps.bench import check_grid, run_benchmark, write_results

    grid = suite_grid(args.suite, models=args.models, methods=args.methods, dtypes=args.dtypes, steps=args.steps,
                      repeats=args.repeats, network_dtype=args.network_dtype)
    check_grid(models=grid["models"], methods=grid["methods"], dtypes=grid["dtypes"], step_counts=grid["steps"],
               repeats=grid["repeats"], out=args.out)
    try:
        rows = run_benchmark(models=grid["models"], methods=grid["methods"], dtypes=grid["dtypes"],
                             step_counts=grid["steps"], repeats=grid["repeats"], device=args.device,
                             network_dtype=grid["network_dtype"])
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was written", file=sys.stderr)
        return 130
    path = write_results(rows, args.out, device=args.device, note=args.note, suite=args.suite)
    print(f"{'model':<13}{'dtype':<9}{'N':>4}  {'method':<26}{'calls':>6}{'time/DDIM':>11}{'sampler/step':>14}"
          f"{'error':>10}  weights")
    for r in rows:
        print(f"{r['model']:<13}{r['dtype']:<9}{r['steps']:>4}  {r['label']:<26}{r['calls']:>6}"
              f"{r['time_ratio_to_ddim']:>11.2f}{r['sampler_overhead_per_step']:>14.3f}{r['round_trip_error']:>10.1e}"
              f"  {r['weights']}")
    notes = sorted({r["timing_note"] for r in rows if r["timing_note"]})
    for note in notes:
        print(f"note: {note}; use --repeats 3 or more to compare times")
    print(f"results: {path} and {path.with_suffix('.csv')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bdia", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, **kwargs):
        return sub.add_parser(name, allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                              **kwargs)

    demo = command("demo", help="round trips of every method on an exact Gaussian mixture")
    demo.add_argument("--steps", type=_positive("--steps", 2), default=50, help="steps of each round trip")
    demo.add_argument("--dim", type=_positive("--dim"), default=2, help="dimension of the mixture")
    demo.add_argument("--batch", type=_positive("--batch"), default=256, help="samples per round trip")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    for name, folder, what in (("train-digits", "digits-unet", "DDPM"), ("train-digits-flow", "digits-flow",
                                                                           "rectified flow")):
        train = command(name, help=f"train the digits {what} (minutes on 2 CPU cores)")
        train.add_argument("--out", type=Path, default=Path("outputs") / folder,
                           help="output folder; the shipped weights are replaced only with --overwrite-shipped")
        train.add_argument("--overwrite-shipped", action="store_true",
                           help="allow --out to be the shipped weights' folder")
        train.add_argument("--steps", type=_positive("--steps"), default=2500)
        train.add_argument("--batch-size", type=_positive("--batch-size"), default=128)
        train.add_argument("--lr", type=float, default=2e-3)
        train.add_argument("--seed", type=int, default=0)
        train.set_defaults(func=_train_digits)

    classifier = command("train-classifier", help="train the digit classifier that scores the ci profile's FID")
    classifier.add_argument("--out", type=Path, default=Path("outputs/digit-classifier"),
                            help="output folder; the shipped weights are replaced only with --overwrite-shipped")
    classifier.add_argument("--overwrite-shipped", action="store_true",
                            help="allow --out to be the shipped weights' folder")
    classifier.add_argument("--epochs", type=_positive("--epochs"), default=30)
    classifier.add_argument("--seed", type=int, default=0)
    classifier.set_defaults(func=_train_classifier)

    standins = command("standins", help="write stand-in weights of the paper profile's models (no network)")
    standins.add_argument("--out", type=Path, required=True, help="folder to use as HF_HUB_CACHE")
    standins.add_argument("--seed", type=int, default=0)
    standins.set_defaults(func=_standins)

    from bdia.apps.fid.profiles import PROFILES
    from bdia.apps.suites import BENCH_DTYPES, BENCH_MODELS, DEFAULT_BENCH_MODELS, DEFAULT_STEPS, SUITES

    fid = command("fid", help="FID per method and network-call budget (resumes after an interruption)")
    fid.add_argument("--profile", choices=list(PROFILES), default="ci")
    fid.add_argument("--methods", nargs="+", type=_method,
                     default=["ddim", "bdia:gamma=0.5", "heun", "bdia-edm:gamma=0.1"],
                     help="methods with options, e.g. ddim bdia:gamma=0.5 edict:p=0.93")
    fid.add_argument("--calls", nargs="+", type=_positive("--calls"), default=[10, 20],
                     help="network-call budgets per sample")
    fid.add_argument("--num-samples", type=_positive("--num-samples", 2), default=2000)
    fid.add_argument("--batch-size", type=_positive("--batch-size"), default=500)
    fid.add_argument("--out", type=Path, default=Path("outputs/fid"))
    fid.add_argument("--model", default=None, help="model id or folder (default: the profile's model)")
    fid.add_argument("--edm-model", default=None,
                     help="an NVlabs EDM checkpoint (.pkl) for heun and bdia-edm; it is a pickle that runs code "
                          "when loaded (and needs NVlabs' dnnlib/torch_utils): trusted files only")
    fid.add_argument("--detector", default=None,
                     help="paper profile: the Inception detector file (default: NVlabs' TorchScript "
                          "inception-2015-12-05.pt in the torch hub cache, downloaded on first use)")
    fid.add_argument("--reference", default=None,
                     help="paper profile: an EDM statistics file (.npz), a folder of images, or a hub data set id "
                          "(default: uoft-cs/cifar10, training split)")
    fid.add_argument("--follow-clipping", action="store_true",
                     help="limit x0 in the DDIM-family samplers as the model's scheduler config says (clip_sample, "
                          "thresholding; google/ddpm-cifar10-32 clips to [-1, 1]); by default nothing is clipped, as in "
                          "EDM's and the paper's samplers")
    fid.add_argument("--device", type=_device, default="cpu")
    fid.add_argument("--seed", type=int, default=0)
    fid.set_defaults(func=_fid)

    bench = command("bench", help="cost and exactness of each method (calls, time ratios, memory, error)")
    bench.add_argument("--suite", choices=list(SUITES), default="cost",
                       help="a named grid: cost (chapter 6), edit (chapter 5's editing methods), gpu (the prepared "
                            "GPU check); the options below override its models, methods, dtypes, steps and repeats")
    bench.add_argument("--models", nargs="+", default=None, choices=BENCH_MODELS, metavar="MODEL",
                       help=f"default: the suite's ({' '.join(DEFAULT_BENCH_MODELS)} for cost); any of "
                            + " ".join(BENCH_MODELS))
    bench.add_argument("--methods", nargs="+", type=_method, default=None,
                       help="method specs (method:option=value,...); default: the suite's")
    bench.add_argument("--dtypes", nargs="+", default=None, choices=BENCH_DTYPES, metavar="DTYPE",
                       help="latent dtypes (" + " ".join(BENCH_DTYPES) + "); default: the suite's")
    bench.add_argument("--steps", nargs="+", type=_positive("--steps", 2), default=None,
                       help=f"step counts; default: the suite's ({' '.join(map(str, DEFAULT_STEPS))} for cost)")
    bench.add_argument("--repeats", type=_positive("--repeats"), default=None, help="timed repeats; default: the "
                       "suite's")
    bench.add_argument("--device", type=_device, default="cpu")
    bench.add_argument("--network-dtype", default=None,
                       choices=["latent", "float16", "bfloat16", "float32", "float64"],
                       help="dtype of the networks; 'latent': the dtype of each row's latents; default: the suite's")
    bench.add_argument("--smoke", action="store_true",
                       help="with --suite gpu: the same code at tiny sizes on the CPU, to test it")
    bench.add_argument("--out", type=Path, default=Path("outputs/bench/results.json"))
    bench.add_argument("--note", default="")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (set BDIA_DEBUG=1 to see the traceback of a user error)."""
    import os

    # transformers' notices about optional image backends (torchvision) say nothing about what bdia does
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the problem
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except UsageError as error:
        if os.environ.get("BDIA_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
