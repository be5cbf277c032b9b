"""Fine-tuning with and without distillation from the uncompressed network, same budget.

    python benchmarks/distillation.py [--compressed FILE] [--train-images 20000] [--epochs 1]

Starts each run from the same compressed VGG-16 (default: the one the VGG-16 benchmark
saved, ``benchmarks/results/vgg16_work/compressed.pt``) and fine-tunes it with
``lrsa.finetune`` on the same random training subset, same lr and schedule (bf16 autocast):
cross-entropy only, logits distillation (alpha 0.5, T 4) and logits + the approximated
layers' outputs. Top-1 on the 10,000 test images. Writes
benchmarks/results/distillation.json and .md.
"""

import argparse
import copy
import time
from pathlib import Path

import torch

from _common import CHECKPOINT, cifar_root, git_version, table
from lrsa.batchnorm import fold_batchnorm
from lrsa.data import load_cifar10, make_loader
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.pipeline import finetune, load_compressed
from lrsa.report import write_report
from lrsa.train import evaluate

RESULTS = Path(__file__).parent / "results"
#: name -> finetune keywords besides the teacher
VARIANTS = {"none": None, "logits": dict(alpha=0.5, temperature=4.0),
            "features": dict(alpha=0.5, temperature=4.0, feature_weight=1.0)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compressed", default=str(RESULTS / "vgg16_work" / "compressed.pt"))
    p.add_argument("--train-images", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", default=str(RESULTS / "distillation"))
    a = p.parse_args()
    if not Path(a.compressed).is_file() or cifar_root() is None:
        raise SystemExit(f"needs {a.compressed} (run benchmarks/vgg16_cifar10.py) and CIFAR-10")
    teacher = vgg16_bn()
    load_checkpoint(teacher, CHECKPOINT)
    teacher = fold_batchnorm(teacher.eval())
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    xte, yte = load_cifar10(cifar_root(), train=False)
    test = make_loader(xte, yte, 500)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(1))[:a.train_images]
    start, _ = load_compressed(a.compressed)
    rows = [{"distillation": "(before fine-tuning)", "top-1": evaluate(start, test)["top1"]}]
    for name, kw in VARIANTS.items():
        model = copy.deepcopy(start)
        train = make_loader(xtr[idx], ytr[idx], 128, train=True, seed=0)
        t0 = time.perf_counter()
        finetune(model, train, epochs=a.epochs, lr=a.lr, bf16=True, progress=True,
                 **({} if kw is None else dict(teacher=teacher, **kw)))
        rows.append({"distillation": name, "top-1": evaluate(model, test)["top1"],
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    data = {"code_version": git_version(), "threads": torch.get_num_threads(),
            "compressed": str(a.compressed), "train_images": a.train_images,
            "epochs": a.epochs, "lr": a.lr, "runs": rows}
    data["markdown"] = "\n".join([
        f"VGG-16 compressed by lrsa, fine-tuned {a.epochs} pass(es) over {a.train_images} "
        f"training images, lr {a.lr} cosine, bf16; code {data['code_version']}, "
        f"{data['threads']} threads. Top-1 on the 10,000 test images.", "",
        table(rows, ["distillation", "top-1", "seconds"])])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
