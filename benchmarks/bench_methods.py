"""Benchmark: the explanation methods of helpers.explain against pytorch-grad-cam and Captum, in one run.

Every method explains the same batch with the course's ResNet18 (1-channel conv1, 1-logit fc, its input
standardisation in front; random weights, eval mode) and the same settings on both sides: the CAM family
on ``--layer``, SmoothGrad with ``--samples`` noisy copies, Integrated Gradients with ``--steps`` nodes,
occlusion with ``--window``/``--stride`` patches, and at most ``--chunk`` images per forward pass wherever a
method evaluates many (Score-CAM, SmoothGrad, IG, occlusion). Synthetic data: random images in [0, 1] and
random weights, so the maps mean nothing; only the timings count. Each time is the median of
``--repeats`` calls after a warm-up call (none for calls over a second), the methods taking turns, and is
shown as maps per second and as a multiple of the floor, one forward pass of the batch without gradients.
Score-CAM costs one forward pass per image and channel (512 on ``layer4``) and dominates the run.

    python benchmarks/bench_methods.py                         # 2 images of 64 x 64 on the CPU, ~1 minute
    python benchmarks/bench_methods.py --batch 16 --size 224 --chunk 256 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import torch

from helpers.explain import cam_family, gradients
from helpers.training.models import resnet18_xray


def pytorch_grad_cam_methods(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """pytorch-grad-cam's Grad-CAM++, HiResCAM, Score-CAM and Eigen-CAM, one callable each."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.get_submodule(args.layer)
    targets = [ClassifierOutputTarget(0)] * len(x)

    def run(name: str) -> Callable[[], object]:
        def call() -> object:
            with getattr(pytorch_grad_cam, name)(model, [layer]) as cam:
                cam.batch_size = args.chunk  # ScoreCAM's masked images per forward pass
                with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM's tqdm progress bars
                    return cam(x, targets=targets)

        return call

    names = ("GradCAMPlusPlus", "HiResCAM", "ScoreCAM", "EigenCAM")
    return {name: run(name) for name in names}


def captum_methods(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """Captum's Saliency, NoiseTunnel(Saliency), IntegratedGradients and Occlusion, one callable each."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    per_image = max(1, args.chunk // len(x))  # Captum counts perturbations per image of the batch
    return {
        "Saliency": lambda: Saliency(model).attribute(x, target=0, abs=True),
        "NoiseTunnel": lambda: NoiseTunnel(Saliency(model)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=args.samples,
            nt_samples_batch_size=per_image,
            stdevs=0.15,
            target=0,
            abs=False,
        ),
        "IntegratedGradients": lambda: IntegratedGradients(model).attribute(
            x, target=0, n_steps=args.steps, internal_batch_size=args.chunk
        ),
        "Occlusion": lambda: Occlusion(model).attribute(
            x,
            sliding_window_shapes=(1, args.window, args.window),
            strides=(1, args.stride, args.stride),
            target=0,
            perturbations_per_eval=per_image,
        ),
    }


def our_methods(model: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace) -> dict:
    """The course's methods with the same settings, each paired with its reference's name."""
    layer, chunk = args.layer, args.chunk
    return {
        "Grad-CAM++": (lambda: cam_family.grad_cam_plus_plus(model, x, layer), "GradCAMPlusPlus"),
        "HiResCAM": (lambda: cam_family.hires_cam(model, x, layer), "HiResCAM"),
        "Score-CAM": (lambda: cam_family.score_cam(model, x, layer, batch_size=chunk), "ScoreCAM"),
        "Eigen-CAM": (lambda: cam_family.eigen_cam(model, x, layer), "EigenCAM"),
        "saliency": (lambda: gradients.saliency(model, x), "Saliency"),
        "SmoothGrad": (
            lambda: gradients.smooth_grad(model, x, samples=args.samples, batch_size=chunk),
            "NoiseTunnel",
        ),
        "Integrated Gradients": (
            lambda: gradients.integrated_gradients(model, x, steps=args.steps, batch_size=chunk),
            "IntegratedGradients",
        ),
        "occlusion": (
            lambda: gradients.occlusion(model, x, window=args.window, stride=args.stride, batch_size=chunk),
            "Occlusion",
        ),
    }


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, the GPU's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(
    methods: dict[str, Callable[[], object]], repeats: int, device: torch.device, warm: float = 1.0
) -> dict[str, float]:
    """Median wall time of each method over ``repeats`` calls, after a warm-up call.

    The methods take turns within each round, so a slow spell of a busy machine hits them all alike. A
    first call longer than ``warm`` seconds counts as a measurement (its set-up costs are lost in the
    noise), which spares a call of Score-CAM on each side.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(repeats + 1):
        for name, fn in methods.items():
            if len(times[name]) < repeats and ((t := seconds(fn, device)) > warm or round_ > 0):
                times[name].append(t)
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(ours: dict, timings: dict[str, float], grad_cam_names: set[str], batch: int) -> None:
    """One row per method: ours and its reference, each in ms, maps/s and multiples of the forward pass."""
    floor = timings["forward"]
    print(f"forward pass (no grad), the floor: {1000 * floor:.1f} ms, {batch / floor:.1f} images/s\n")
    head = f"{'ms':>9} {'maps/s':>8} {'x fwd':>7}"
    print(f"{'method':22s} {head}   {'reference':28s} {head}   {'ref / ours':>10}")
    for name, (_, reference) in ours.items():
        mine, theirs = timings[name], timings[f"reference {reference}"]
        cells = [f"{1000 * t:9.1f} {batch / t:8.2f} {t / floor:7.1f}" for t in (mine, theirs)]
        library = "pytorch-grad-cam" if reference in grad_cam_names else "captum"
        print(f"{name:22s} {cells[0]}   {library + ' ' + reference:28s} {cells[1]}   {theirs / mine:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="images per batch (default 2)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--layer", default="layer4", help="layer of the CAM family (default layer4)")
    parser.add_argument("--samples", type=int, default=10, help="SmoothGrad's noisy copies (default 10)")
    parser.add_argument("--steps", type=int, default=16, help="Integrated Gradients' nodes (default 16)")
    parser.add_argument("--window", type=int, default=16, help="occlusion patch side (default 16)")
    parser.add_argument("--stride", type=int, default=8, help="occlusion stride (default 8)")
    parser.add_argument("--chunk", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is shown")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = resnet18_xray().eval().to(device)
    x = torch.rand(
        args.batch, 1, args.size, args.size, device=device
    )  # images in [0, 1], as the model expects

    def forward() -> None:
        with torch.no_grad():
            model(x)

    ours = our_methods(model, x, args)
    grad_cam_refs = pytorch_grad_cam_methods(model, x, args)
    references = {
        f"reference {name}": fn for name, fn in (grad_cam_refs | captum_methods(model, x, args)).items()
    }
    methods = {"forward": forward, **{name: fn for name, (fn, _) in ours.items()}, **references}
    print(
        f"Explanations of ResNet18 (1 channel, 1 logit, random weights) for {args.batch} synthetic images of "
        f"{args.size} x {args.size}, device {device}, {torch.get_num_threads()} threads, median of "
        f"{args.repeats}\nCAMs on {args.layer}; SmoothGrad {args.samples} samples; IG {args.steps} steps "
        f"(Gauss-Legendre); occlusion {args.window} px every {args.stride} px; <= {args.chunk} images "
        "per forward pass"
    )
    timings = median_seconds(methods, args.repeats, device)
    print_table(ours, timings, set(grad_cam_refs), args.batch)


if __name__ == "__main__":
    main()
