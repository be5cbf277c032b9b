"""The command line's grammar: :func:`build_parser` declares the ``lrsa`` subcommands and
their options; :mod:`lrsa.cli` runs them.
"""

from __future__ import annotations

import argparse

EPILOG = """examples:
  lrsa demo                                  # offline: digits, small CNN, under a minute
  lrsa download-cifar10 ~/cifar              # the official archive, MD5-checked (163 MB)
  lrsa train --model vgg16_bn --data ~/cifar --epochs 30 --out vgg.pt --bf16
  torchrun --nproc_per_node=4 -m lrsa train ...   # data-parallel: same steps, K-th of the work
  lrsa compress --model vgg16_bn --checkpoint vgg.pt --data ~/cifar --out runs/vgg
  lrsa evaluate --checkpoint runs/vgg/compressed.pt --data ~/cifar
  lrsa report runs/vgg/report.json
CIFAR-10 folders use the official cifar-10-batches-py layout (LRSA_DATA is the default)."""


def _common_options(sp, model_default="vgg16_bn"):
    sp.add_argument("--model", default=model_default,
                    help="vgg16_bn | small_cnn | nin (CIFAR-10 / digits)")
    sp.add_argument("--data", default=None, help="CIFAR-10 folder (default: $LRSA_DATA)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--calib-images", type=int, default=1000,
                    help="calibration images (paper: 1000)")


def _compress_options(sp):
    from .pipeline import MAX_GRAD_NORM
    from .pipeline.budget import PRESETS
    sp.add_argument("--out", default="runs/compress", help="output folder (resumable)")
    # None: the preset's value, else Budget's default (0.03, 3.0, 1, energy)
    sp.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="a named budget (lrsa.Budget.preset), the options below changing "
                         "its fields: " + "; ".join(
                             f"{name}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
                             for name, fields in sorted(PRESETS.items())))
    sp.add_argument("--relative-lam1", type=float, default=None,
                    help="lam1 relative to each layer's gradient scale (default 0.03)")
    sp.add_argument("--ratio", type=float, default=None,
                    help="lam2 / lam1 (default 3; paper 2.5-3; 0: B alone)")
    sp.add_argument("--rank-multiple", type=int, default=None,
                    help="ranks in multiples of this (16 suits CPUs with 512-bit vectors)")
    sp.add_argument("--size", dest="size", type=float, default=None,
                    help="whole-network stored size in (0, 1] (Budget(size=...))")
    sp.add_argument("--macs", dest="macs", type=float, default=None,
                    help="whole-network multiply-add fraction in (0, 1], instead or with "
                         "--size (both limits hold)")
    size = sp.add_mutually_exclusive_group()  # lrsa.Budget refuses other pairs by name
    size.add_argument("--speedup", dest="speedup", type=float,
                      default=None, help="whole-model speed-up (> 1) on this device instead, "
                      "spread by measured layer times (--fallback time also checks it)")
    size.add_argument("--layer-size", dest="layer_size", type=float,
                      default=None, help="each layer's stored size in (0, 1] instead")
    sp.add_argument("--spread", choices=["energy", "sqrt"], default=None,
                    help="how --size is spread over the layers: by weight energy per stored "
                         "weight (default), or CR ~ 1/sqrt(layer size), a heuristic (not the "
                         "rule of the paper's Table I)")
    sp.add_argument("--all-layers", action="store_true", default=None,
                    help="also approximate the first layer and the 1x1 convs (kept by default, "
                         "as the paper)")
    sp.add_argument("--fallback", choices=["macs", "time", "none"], default="macs",
                    help="where a solved layer stays dense: fewer multiply-adds or not "
                         "(default; the same model on every run), measured time (a quiet "
                         "machine), or never")
    sp.add_argument("--response", choices=["relu", "linear"], default="relu")
    sp.add_argument("--strategy", choices=["asymmetric", "symmetric"],
                    default="asymmetric")
    sp.add_argument("--samples-per-image", type=int, default=10)
    sp.add_argument("--max-samples", type=int, default=10_000)
    sp.add_argument("--finetune-epochs", type=int, default=2)
    sp.add_argument("--finetune-lr", type=float, default=1e-3,
                    help="peak lr (cosine); BN is folded, so keep it small")
    sp.add_argument("--finetune-max-grad-norm", type=float, default=MAX_GRAD_NORM,
                    help="cap on the gradients' total norm per step (0: none); keeps a sharp "
                         "compressed network from diverging")
    sp.add_argument("--distill", choices=["logits", "features", "none"], default="logits",
                    help="fine-tuning also learns from the uncompressed network: its "
                         "logits, or its logits and the approximated layers' outputs")
    sp.add_argument("--bf16", action="store_true", help="bf16 autocast when fine-tuning")
    _device_option(sp, "fine-tune on")
    sp.add_argument("--latency-batch", type=int, default=128)
    sp.add_argument("--repeats", type=int, default=20, help="latency repeats")
    sp.add_argument("--no-baselines", dest="baselines", action="store_false",
                    help="skip truncated SVD and reduced-rank regression at the same "
                         "per-layer sizes")


def _device_option(sp, what):
    sp.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help=f"where to {what}; under torchrun each process takes the GPU "
                         "LOCAL_RANK. Several processes: torchrun --nproc_per_node=K -m lrsa "
                         "... (gloo on CPU, NCCL on CUDA); --batch-size is the global batch")


def build_parser():
    """The ``lrsa`` argument parser: one subcommand per command of :mod:`lrsa.cli`, named by
    ``args.command``."""
    from .data import CIFAR10_VALIDATION_IMAGES
    p = argparse.ArgumentParser(prog="lrsa", description="Unified sparse + low-rank "
                                "approximation of CNNs (Ma et al., ICTAI 2019).",
                                epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("demo", help="offline demo on scikit-learn's bundled 8x8 digits")
    _common_options(sp, "small_cnn")
    _compress_options(sp)
    sp.add_argument("--epochs", type=int, default=6, help="baseline training epochs")
    sp.set_defaults(out="runs/demo", calib_images=512, size=0.3, finetune_epochs=2,
                    latency_batch=64)

    sp = sub.add_parser("download-cifar10", help="download and verify the official CIFAR-10")
    sp.add_argument("root", nargs="?", default=None,
                    help="parent folder for cifar-10-batches-py (default: $LRSA_DATA, else "
                         "~/.cache/lrsa)")

    sp = sub.add_parser("fetch-checkpoint",
                        help="download a hosted checkpoint, verify its SHA-256, cache it and "
                             "print its path")
    sp.add_argument("url", help="https://, http:// or file:// address of the checkpoint")
    sp.add_argument("sha256", help="the file's full SHA-256 (64 hex digits, `sha256sum FILE`)")

    sp = sub.add_parser("train", help="train a baseline (SGD, cosine, crop+flip)")
    _common_options(sp)
    sp.add_argument("--epochs", type=int, default=30)
    sp.add_argument("--lr", type=float, default=0.1)
    sp.add_argument("--batch-size", type=int, default=128)
    sp.add_argument("--warmup-epochs", type=float, default=None,
                    help="linear warm-up (default: min(2, epochs - 1))")
    sp.add_argument("--bf16", action="store_true", help="bf16 autocast on CPU")
    sp.add_argument("--val-images", type=int, default=CIFAR10_VALIDATION_IMAGES,
                    help="CIFAR-10 training images held out for validation, the same ones "
                         "for every model (lrsa.data.validation_split; default "
                         f"{CIFAR10_VALIDATION_IMAGES}; 0: train on all 50,000, leaving no "
                         "clean set to choose settings on). The digits keep the demo's split")
    _device_option(sp, "train on")
    sp.add_argument("--out", required=True,
                    help="checkpoint path; OUT.state is written after every epoch and a "
                         "rerun with the same arguments resumes from it")

    sp = sub.add_parser("compress", help="approximate layer by layer, fine-tune, report")
    _common_options(sp)
    sp.add_argument("--checkpoint", default=None, help="baseline weights (weights_only load)")
    _compress_options(sp)

    sp = sub.add_parser("evaluate", help="top-1/top-5 of original or compressed weights")
    _common_options(sp)
    sp.add_argument("--checkpoint", required=True)

    sp = sub.add_parser("course", help="lay out the course as an nbgrader course folder")
    sp.add_argument("folder", help="a new folder for the course")
    sp.add_argument("--notebooks", default=None,
                    help="a folder of course notebooks with solutions/ "
                         "(default: the ones installed with lrsa)")

    sp = sub.add_parser("report", help="print a report.json as markdown")
    sp.add_argument("report", help="report.json from lrsa compress or demo, or its folder")
    return p
