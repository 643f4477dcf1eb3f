"""Benchmark: batched Grad-CAM with helpers.explain.cam against Captum and pytorch-grad-cam.

Each method explains the same batch (a ResNet18 with a 1-channel conv1 and a 1-logit fc, random weights,
eval mode, map from ``layer4``, upsampled to the input size and min-max scaled) and is timed against the
floor: one forward pass of the batch without gradients. Target: ``helpers.explain.cam.grad_cam`` within 1.2x of
the forward pass and no slower than either library.

    python benchmarks/bench_gradcam.py                     # 8 images of 224 x 224 on the CPU
    python benchmarks/bench_gradcam.py --batch 32 --size 224 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from helpers.explain.cam import grad_cam, min_max_normalize
from helpers.training.models import resnet18_xray


def xray_resnet18() -> torch.nn.Module:
    """The course's model (torchvision ResNet18, 1-channel conv1, 1-logit fc, its input standardisation in
    front), random weights, eval mode."""
    return resnet18_xray().eval()


def captum_grad_cam(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from captum.attr import LayerGradCam

    maps = LayerGradCam(model, model.layer4).attribute(x, target=0, relu_attributions=True)
    return min_max_normalize(
        F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    )


def pytorch_grad_cam(model: torch.nn.Module, x: torch.Tensor):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model, [model.layer4]) as cam:
        return cam(x, targets=[ClassifierOutputTarget(0)] * len(x))


def median_seconds(
    methods: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median wall time of each method over ``repeats`` rounds, after one warm-up round.

    The methods take turns within each round, so a slow spell of a busy machine hits them all alike.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(repeats + 1):
        for name, fn in methods.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds; the median is shown")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = xray_resnet18().to(device)
    x = torch.rand(
        args.batch, 1, args.size, args.size, device=device
    )  # images in [0, 1], as the model expects

    def forward() -> None:
        with torch.no_grad():
            model(x)

    methods = {
        "forward (no grad), the floor": forward,
        "helpers.explain.cam.grad_cam": lambda: grad_cam(model, x, "layer4"),
        "captum LayerGradCam": lambda: captum_grad_cam(model, x),
        "pytorch-grad-cam GradCAM": lambda: pytorch_grad_cam(model, x),
    }
    print(
        f"Grad-CAM on layer4 of ResNet18 (1 channel, 1 logit): {args.batch} x {args.size} x {args.size}, "
        f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    timings = median_seconds(methods, args.repeats, device)
    floor = timings["forward (no grad), the floor"]
    for name, t in timings.items():
        print(f"{name:32s} {1000 * t:9.1f} ms  {t / floor:5.2f}x forward")
    ours = timings["helpers.explain.cam.grad_cam"]
    fastest_library = min(timings["captum LayerGradCam"], timings["pytorch-grad-cam GradCAM"])
    print(
        f"helpers.explain.cam.grad_cam: {ours / floor:.2f}x forward (target <= 1.2x), "
        f"{fastest_library / ours:.2f}x faster than the faster library"
    )


if __name__ == "__main__":
    main()
