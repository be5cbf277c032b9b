"""Command line: ``lrsa demo | download-cifar10 | fetch-checkpoint | train | compress |
evaluate | course | report`` (also ``python -m lrsa``).

Every command prints what it did and where it wrote it; ``lrsa COMMAND --help`` explains
the options (declared in :mod:`lrsa.cli_parser`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

from .cli_parser import build_parser


def _cifar(args, train):
    from .data import load_cifar10
    return load_cifar10(args.data, train=train)


class _Data(NamedTuple):
    train: object  # the training loader (augmented, sharded under torchrun)
    test: object
    calibration: list  # batches of training images
    input_shape: tuple
    validation: object = None  # a loader of held-out training images, or None


def _loaders(args, batch_size=128, val_images=0):
    """The data of a command (:class:`_Data`); ``val_images`` CIFAR-10 training images are
    held out for validation (:func:`lrsa.data.validation_split`) before anything else."""
    from .data import load_digits_images, make_loader, validation_split
    if args.model == "small_cnn":
        d = load_digits_images()
        kw = dict(mean=None, std=None)
        train = make_loader(d.x_train, d.y_train, 64, train=True, pad=1, seed=args.seed,
                            shard=True, **kw)
        test = make_loader(d.x_test, d.y_test, 256, **kw)
        calib = [d.x_train[i:i + 128] for i in range(0, min(args.calib_images, 1347), 128)]
        return _Data(train, test, calib, (1, 1, 8, 8))
    xtr, ytr = _cifar(args, True)
    val = None
    if val_images:
        (xtr, ytr), (xval, yval) = validation_split(xtr, ytr, val_images)
        val = make_loader(xval, yval, 500)
    xte, yte = _cifar(args, False)
    train = make_loader(xtr, ytr, batch_size, train=True, seed=args.seed, shard=True)
    test = make_loader(xte, yte, 500)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(xtr), generator=g)[:args.calib_images]
    calib = [x for x, _ in make_loader(xtr[idx], ytr[idx], 250)]
    return _Data(train, test, calib, (1, 3, 32, 32), val)


def _start_processes(args):
    """Join torchrun's process group (no-op in a plain process); the device to train on."""
    from . import distributed
    distributed.setup()
    return distributed.device(args.device)


def _model(name):
    from .models import get_model
    return get_model(name)


def _load_any(path, model_name):
    """A compressed file from lrsa compress, or original weights for ``model_name``."""
    from .pipeline import load_compressed
    from .models import load_checkpoint
    from .utils import load_torch_file
    obj = load_torch_file(path, "a checkpoint (weights from lrsa train, or compressed.pt "
                                "from lrsa compress)")
    if isinstance(obj, dict) and obj.get("format") == "lrsa-compressed-1":
        return load_compressed(path)[0]
    model = _model(model_name)
    load_checkpoint(model, path)
    return model


def cmd_train(args):
    from . import distributed
    from .train import Recipe, evaluate, train
    from .utils import atomic_torch_save
    dev = _start_processes(args)
    rank0 = distributed.is_main()
    torch.manual_seed(args.seed)  # the initial weights follow --seed, not the process's history
    model = _model(args.model).to(dev)
    data = _loaders(args, args.batch_size, args.val_images)  # the digits keep the demo's split
    train_loader, test_loader, val_loader = data.train, data.test, data.validation
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = out.with_name(out.name + ".state")  # per-epoch, resumable: rerun to continue
    warmup = min(2, args.epochs - 1) if args.warmup_epochs is None else args.warmup_epochs
    if state.exists() and rank0:
        print(f"resuming from {state}")
    t0 = time.perf_counter()

    def report(epoch, stats):
        if rank0:
            print(f"epoch {epoch + 1}/{args.epochs}: loss {stats['loss']:.4f}, train top-1 "
                  f"{stats['acc']:.2f}% ({time.perf_counter() - t0:.0f} s this run)",
                  flush=True)

    how = Recipe(epochs=args.epochs, lr=args.lr, bf16=args.bf16, warmup_epochs=warmup,
                 seed=args.seed)
    hist = train(model, train_loader, how, progress=rank0, checkpoint=state,
                 on_epoch_end=report)
    if not rank0:
        return
    acc = evaluate(model, test_loader)["top1"]
    val_acc = None if val_loader is None else evaluate(model, val_loader)["top1"]
    k = distributed.world_size()
    recipe = (f"lrsa train --model {args.model} --epochs {args.epochs} --lr {args.lr} "
              f"--batch-size {args.batch_size} --warmup-epochs {warmup} --seed {args.seed}"
              + (f" --val-images {args.val_images}" if args.model != "small_cnn" else "")
              + (" --bf16" if args.bf16 else "")
              + f"; SGD{' Nesterov' if how.nesterov else ''} {how.momentum}, weight decay "
              f"{how.weight_decay:g}, cosine per step, random crop (pad 4) + flip"
              + (f"; {k} processes (torchrun, DDP), global batch {args.batch_size}"
                 if k > 1 else ""))
    atomic_torch_save({"arch": model.arch, "state_dict": model.cpu().state_dict(),
                       "test_acc": acc / 100, "epochs": args.epochs, "recipe": recipe,
                       "train_loss": hist.loss, "train_acc": hist.acc,
                       "val_acc": None if val_acc is None else val_acc / 100,
                       "val_images": 0 if val_loader is None else args.val_images}, out)
    state.unlink()
    val = "" if val_acc is None else f"validation top-1 {val_acc:.2f}%, "
    print(f"trained {args.model} for {args.epochs} epochs ({time.perf_counter() - t0:.0f} s "
          f"in this run): {val}test top-1 {acc:.2f}% -> {out} (sha256 "
          f"{hashlib.sha256(out.read_bytes()).hexdigest()})")


def _compress_args(args):
    """compress's arguments from the command line's: the same Budget and SolverSettings."""
    from .pipeline import Budget, SolverSettings
    given = {k: getattr(args, k) for k in ("size", "macs", "speedup", "layer_size",
                                           "relative_lam1", "ratio", "rank_multiple", "spread",
                                           "all_layers")
             if getattr(args, k) is not None}
    return dict(budget=Budget.preset(args.preset, **given) if args.preset else Budget(**given),
                response=args.response, strategy=args.strategy,
                solver=SolverSettings(samples_per_image=args.samples_per_image,
                                      max_samples=args.max_samples, seed=args.seed),
                fallback=None if args.fallback == "none" else args.fallback,
                workdir=Path(args.out) / "work", progress=True)


def run_compress(args, model):
    """compress -> evaluate (and the baselines at the same sizes) -> fine-tune -> evaluate
    -> report; returns the report dict.

    Under torchrun, rank 0 compresses (and runs the baselines) alone, the processes then
    fine-tune together, and rank 0 evaluates and reports; the others return None.
    """
    import copy

    from . import distributed
    from .batchnorm import fold_batchnorm
    from .pipeline import compress, finetune, load_compressed, save_compressed
    from .report import network_summary, write_report
    from .train import evaluate
    dev = _start_processes(args)
    rank0 = distributed.is_main()
    data = _loaders(args)
    train_loader, test_loader, calib, in_shape = (data.train, data.test, data.calibration,
                                                  data.input_shape)
    out = Path(args.out)
    handover = out / "work" / "compressed_before_finetuning.pt"
    if rank0:
        top1_base = evaluate(model, test_loader)["top1"]
        compressed, rep = compress(model, calib, **_compress_args(args))
        top1_comp = evaluate(compressed, test_loader)["top1"]
        baselines = _baselines(args, model, calib, rep, test_loader) if args.baselines else {}
        if distributed.active():
            save_compressed(compressed, handover)  # the others rebuild it from `model`
    distributed.barrier()
    if not rank0:
        compressed = load_compressed(handover, build=lambda: copy.deepcopy(model))[0]
    t0 = time.perf_counter()
    max_grad_norm = args.finetune_max_grad_norm or None  # 0: no cap
    if args.finetune_epochs:
        teacher = None if args.distill == "none" else fold_batchnorm(copy.deepcopy(model))
        finetune(compressed.to(dev), train_loader, epochs=args.finetune_epochs,
                 lr=args.finetune_lr, teacher=None if teacher is None else teacher.to(dev),
                 feature_weight=1.0 if args.distill == "features" else 0.0,
                 bf16=args.bf16, progress=rank0, seed=args.seed,
                 max_grad_norm=max_grad_norm)
    ft_seconds = time.perf_counter() - t0
    if not rank0:
        return None
    top1_ft = evaluate(compressed, test_loader)["top1"]
    compressed.cpu()
    model_kwargs = getattr(args, "model_kwargs", {})
    save_compressed(compressed, out / "compressed.pt", arch=args.model,
                    model_kwargs=model_kwargs, report=rep)
    # against the BN-folded original: the speed-up is the approximation's, not the folding's
    summary = network_summary(fold_batchnorm(copy.deepcopy(model).eval()), compressed.eval(),
                              in_shape, latency_batches=(1, args.latency_batch),
                              repeats=args.repeats)
    data = {"model": args.model, "model_kwargs": model_kwargs, **summary,
            "top1_baseline": top1_base, "top1_compressed": top1_comp,
            "top1_finetuned": top1_ft, "approx_seconds": rep.seconds,
            "finetune_epochs": args.finetune_epochs, "finetune_seconds": ft_seconds,
            "finetune_distill": args.distill, "finetune_processes": distributed.world_size(),
            "finetune_max_grad_norm": max_grad_norm,
            "speed_check": rep.speed,
            "baselines": baselines,
            "settings": {k: str(v) for k, v in _compress_args(args).items()},
            "layers": [dict(r) for r in rep.layers]}
    data["markdown"] = _markdown(data, rep)
    write_report(out / "report", data)
    return data


def _baselines(args, model, calib, rep, test_loader):
    """Truncated SVD and reduced-rank regression at the per-layer sizes of ``rep``: method
    -> {"top1", "params_compressed"}."""
    from .pipeline import compress_like
    from .report import count_parameters
    from .train import evaluate
    found = {}
    solver = _compress_args(args)["solver"]
    for method in ("svd", "rrr"):
        other, _ = compress_like(model, calib, rep, method=method, response="linear",
                                 strategy=args.strategy, solver=solver, progress=False)
        found[method] = {"top1": evaluate(other, test_loader)["top1"],
                         "params_compressed": count_parameters(other)}
    return found


def _markdown(data, rep):
    from .paper import PAPER_TABLE_I, PAPER_VGG16, VGG16_LAYER_NAMES
    from .report import markdown_table
    vgg = data["model"] == "vgg16_bn"
    table = markdown_table(rep.layers, paper=PAPER_TABLE_I if vgg else None,
                           names=VGG16_LAYER_NAMES if vgg else None,
                           paper_ratio=PAPER_VGG16["params_ratio"] if vgg else None)
    lat = "; ".join(f"batch {k[1:]}: {v['original_median_s'] * 1e3:.1f} ms -> "
                    f"{v['compressed_median_s'] * 1e3:.1f} ms ({v['speedup']:.2f}x)"
                    for k, v in data["latency"].items())
    speed_share = " / ".join(f"{100 * v['speedup'] / data['macs_ratio']:.0f}%"
                             for v in data["latency"].values())
    lines = [table, "",
             f"- parameters: {data['params_original']:,} -> {data['params_compressed']:,} "
             f"({data['params_ratio']:.2f}x fewer)",
             f"- MACs: {data['macs_ratio']:.2f}x fewer",
             f"- top-1: baseline {data['top1_baseline']:.2f}%, compressed "
             f"{data['top1_compressed']:.2f}%, fine-tuned ({data['finetune_epochs']} epochs) "
             f"{data['top1_finetuned']:.2f}%",
             *[f"- same stored size per layer, before fine-tuning: {name} "
               f"{data['baselines'][k]['top1']:.2f}%" for k, name in
               (("svd", "truncated SVD"), ("rrr", "reduced-rank regression"))
               if k in data.get("baselines", {})],
             f"- approximation time: {data['approx_seconds']:.0f} s",
             f"- CPU latency against the BN-folded original (median, interleaved runs): "
             f"{lat}; the MAC ratio alone would give {data['macs_ratio']:.2f}x, so the "
             f"measured speed-ups are {speed_share} of it",
             "", "Why each layer is stored as it is:", "",
             *rep.reasons(VGG16_LAYER_NAMES if vgg else None)]
    return "\n".join(lines)


def cmd_compress(args):
    model = _model(args.model)
    if args.checkpoint:
        from .models import load_checkpoint
        load_checkpoint(model, args.checkpoint)
    data = run_compress(args, model)
    if data is not None:  # rank 0 reports
        print(data["markdown"])
        print(f"\nwrote {Path(args.out) / 'compressed.pt'} and "
              f"{Path(args.out) / 'report.json'}")


#: the demo's CNN width: at the default 32 channels every factored layer runs slower than
#: its dense original on a CPU (call overheads dominate such small convolutions), so the
#: demo would show no speed-up; at 128 the savings are measurable
DEMO_WIDTH = 128


def cmd_demo(args):
    """Train the small CNN on the bundled digits (cached), then compress it."""
    from . import distributed
    from .train import evaluate, train
    if distributed.launched():
        raise ValueError("the demo runs in one process; start it with python, not torchrun")
    args.model = "small_cnn"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.model_kwargs = {"width": DEMO_WIDTH}
    base = out / f"small_cnn_w{DEMO_WIDTH}.pt"
    torch.manual_seed(args.seed)
    from .models import get_model
    model = get_model("small_cnn", **args.model_kwargs)
    data = _loaders(args)
    train_loader, test_loader = data.train, data.test
    if base.exists():
        from .models import load_checkpoint
        load_checkpoint(model, base)
        print(f"baseline from {base}")
    else:
        train(model, train_loader, epochs=args.epochs, lr=0.05, seed=args.seed)
        torch.save({"arch": model.arch, "state_dict": model.state_dict()}, base)
        print(f"trained the baseline ({args.epochs} epochs): "
              f"top-1 {evaluate(model, test_loader)['top1']:.2f}%")
    _start_over_if_stale(out / "work", {k: v for k, v in vars(args).items() if k != "func"})
    data = run_compress(args, model)
    print(data["markdown"])
    print(f"\nwrote {out / 'report.json'}, {out / 'report.md'}, {out / 'compressed.pt'}")


def _start_over_if_stale(work, options=None):
    """The demo's saved layers are reused only when this version of lrsa's code computed
    them with the same ``options`` (the command's); otherwise the folder is cleared, with one
    line saying why (``compress`` itself refuses stale files rather than guess, which suits
    a user's own runs)."""
    import shutil

    from .utils import atomic_write_text, code_version, load_torch_file
    work = Path(work)
    files = sorted(work.glob("layer_*.pt"))
    codes = {(load_torch_file(f, "a saved layer").get("provenance") or {}).get("code")
             for f in files}
    saved = work / "options.json"
    options = json.loads(json.dumps(options or {}, sort_keys=True, default=str))
    why = ("another version of lrsa's code" if files and codes != {code_version()} else
           "other options" if files and saved.exists()
           and json.loads(saved.read_text()) != options else None)
    if why:
        print(f"{work} was computed by {why}: starting over")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps(options, sort_keys=True))


def cmd_evaluate(args):
    from .train import evaluate
    model = _load_any(args.checkpoint, args.model)
    test_loader = _loaders(args).test
    print(json.dumps(evaluate(model, test_loader, topk=(1, 5))))


def cmd_download_cifar10(args):
    from .data import download_cifar10
    print(f"CIFAR-10 in {download_cifar10(args.root, progress=True)}")


def cmd_fetch_checkpoint(args):
    from .models import fetch_checkpoint
    try:
        print(fetch_checkpoint(args.url, args.sha256, progress=True))
    except ConnectionError as exc:  # main() reports ValueError as a one-line error
        raise ValueError(str(exc)) from exc


def cmd_course(args):
    from .course import grading as course
    root = Path(args.folder)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty; give a new folder for the nbgrader course")
    names = course.make_course(root, args.notebooks)
    print(f"nbgrader course in {root}: {len(names)} lessons ({', '.join(names)}).\n"
          f"Next: cd {root} && nbgrader generate_assignment {names[0]} (pip install -e "
          "'.[grade]' for nbgrader); collect submissions into submitted/<student>/<lesson>/, "
          f"then nbgrader autograde {names[0]}")


def cmd_report(args):
    path = Path(args.report)
    if path.is_dir():  # a run folder: its report
        path = path / "report.json"
    if not path.is_file():
        raise ValueError(f"{path} does not exist; expected report.json from lrsa compress "
                         "or lrsa demo (or the folder that holds it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not JSON ({exc}); expected report.json from lrsa "
                         "compress or lrsa demo (report.md is its markdown: open it)") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds JSON but not a report from lrsa compress")
    print(data.get("markdown") or json.dumps(data, indent=1))


#: the function behind each subcommand of :func:`lrsa.cli_parser.build_parser`
COMMANDS = {"demo": cmd_demo, "download-cifar10": cmd_download_cifar10,
            "fetch-checkpoint": cmd_fetch_checkpoint, "train": cmd_train,
            "compress": cmd_compress, "evaluate": cmd_evaluate, "course": cmd_course,
            "report": cmd_report}


def main(argv=None):
    from . import distributed
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"lrsa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
