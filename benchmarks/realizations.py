"""Which realization of A + U V runs fastest on this machine: measured, not assumed.

    python benchmarks/realizations.py --compressed FILE [--repeats 20]

On a compressed VGG-16 (lrsa's format, e.g. the ablation's
``runs/ablation_vgg16/seed0/a_plus_b.pt``), against the BN-folded original, interleaved
in the same process (median of ``--repeats``, minimum beside it):

1. per factored convolution, in place (its real input shape, batch 1 and 128): lrsa's layer
   (U V, with the sparse part as its own convolution over the kept input channels), A + U V
   as one dense convolution, and, where the layer has a sparse part, the sparse part fused
   with V into one convolution over all channels (a 1 x 1 U on the rank rows, the rest
   added);
2. the whole network in fp32 (contiguous), channels_last, bf16 autocast and
   ``torch.compile`` (each applied to both networks, so the ratio compares like with like).

Writes benchmarks/results/realizations.json and .md.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

from _common import CHECKPOINT, cpu_model, git_version, load_pair, table
from lrsa.layers import SparseLowRankConv2d
from lrsa.paper import VGG16_LAYER_NAMES
from lrsa.report import write_report
from lrsa.timing import allocator, compare_latency

RESULTS = Path(__file__).parent / "results"


class FusedFirstConv(nn.Module):
    """A + U V with the sparse part fused into V's convolution: one conv over all input
    channels gives [V x; A x] (r + n channels), then U (1 x 1) on the first r plus the rest."""

    def __init__(self, layer):
        super().__init__()
        c, (kh, kw) = layer.in_channels, layer.kernel_size
        n, r = layer.out_channels, layer.rank
        A = torch.zeros(n, c, kh, kw)
        A[:, layer.kept_index] = layer.sparse.weight.detach()
        W = torch.cat([layer.lowrank_v.weight.detach(), A])
        self.first = nn.Conv2d(c, r + n, layer.kernel_size, layer.stride, layer.padding,
                               layer.dilation, bias=False)
        self.first.weight.data.copy_(W)
        self.u, self.r = layer.lowrank_u, r  # U carries the layer's bias

    def forward(self, x):
        y = self.first(x)
        return self.u(y[:, :self.r]) + y[:, self.r:]


def layer_inputs(model, shape):
    """Input shape of every module, from one forward pass."""
    shapes, hooks = {}, []
    def record(name):
        def hook(_module, args):  # returns None: a pre-hook's return value replaces the args
            shapes.setdefault(name, tuple(args[0].shape[1:]))
        return hook

    for name, m in model.named_modules():
        hooks.append(m.register_forward_pre_hook(record(name)))
    with torch.no_grad():
        model(torch.zeros(*shape))
    for h in hooks:
        h.remove()
    return shapes


def per_layer(compressed, repeats):
    """Every factored convolution in place against its dense form (A + U V as one
    convolution), and, where it has a sparse part, against the sparse part fused with V."""
    rows = []
    shapes = layer_inputs(compressed, (1, 3, 32, 32))
    for name, m in compressed.named_modules():
        if not (isinstance(m, SparseLowRankConv2d) and m.rank):
            continue
        fused_layer = FusedFirstConv(m) if m.sparse is not None else None
        if fused_layer is not None:
            with torch.no_grad():  # the same function, or the timing means nothing
                x = torch.randn(2, *shapes[name])
                torch.testing.assert_close(fused_layer(x), m(x), rtol=1e-4, atol=1e-4)
        for b in (1, 128):
            x_shape = (b, *shapes[name])
            dense = compare_latency(m, m.to_dense_module(), x_shape, repeats=repeats)
            row = {"layer": VGG16_LAYER_NAMES.get(name, name), "batch": b,
                   "kept channels": 0 if m.sparse is None else len(m.kept_index),
                   "rank": m.rank, "separate ms": 1e3 * dense["original_median_s"],
                   "dense ms": 1e3 * dense["compressed_median_s"]}
            if fused_layer is not None:
                fused = compare_latency(m, fused_layer, x_shape, repeats=repeats)
                row["fused ms"] = 1e3 * fused["compressed_median_s"]
            rows.append(row)
            print(rows[-1], flush=True)
    return rows


def whole_network(original, compressed, repeats):
    rows = []
    variants = {"fp32": (lambda m: m, False, False),
                "channels_last": (lambda m: m, True, False),
                "bf16 autocast": (lambda m: m, False, True),
                "torch.compile": (torch.compile, False, False)}
    for label, (wrap, channels_last, bf16) in variants.items():
        for b in (1, 128):
            try:
                o, c = wrap(copy.deepcopy(original)), wrap(copy.deepcopy(compressed))
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    res = compare_latency(o, c, (b, 3, 32, 32), repeats=repeats,
                                          channels_last=channels_last, warmup=3)
            except Exception as exc:  # e.g. no C++ compiler for torch.compile
                rows.append({"realization": label, "batch": b, "note": repr(exc)[:120]})
                continue
            rows.append({"realization": label, "batch": b,
                         "original ms": 1e3 * res["original_median_s"],
                         "lrsa ms": 1e3 * res["compressed_median_s"],
                         "speed-up": res["speedup"],
                         "speed-up (min)": res["original_min_s"] / res["compressed_min_s"]})
            print(rows[-1], flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compressed", required=True,
                   help="a compressed VGG-16 in lrsa's format, e.g. "
                        "runs/ablation_vgg16/seed0/a_plus_b.pt")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=str(RESULTS / "realizations"))
    a = p.parse_args()
    original, compressed = load_pair("vgg16_bn", CHECKPOINT, a.compressed)
    layers = per_layer(compressed, a.repeats)
    network = whole_network(original, compressed, a.repeats)
    data = {"argv": sys.argv, "code_version": git_version(), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "allocator": allocator(),
            "compressed": str(a.compressed), "repeats": a.repeats, "layers": layers,
            "network": network}
    data["markdown"] = "\n".join([
        f"VGG-16 (lrsa) against the BN-folded original, code {data['code_version']}, "
        f"{data['threads']} threads, median of {a.repeats} interleaved repeats.", "",
        "Whole network, each realization applied to both:", "",
        table(network, ["realization", "batch", "original ms", "lrsa ms", "speed-up",
                        "speed-up (min)", "note"]), "",
        "Factored layers in place (lrsa's layer, the sparse part fused with V where there is "
        "one, or one dense conv):", "",
        table(layers, ["layer", "batch", "kept channels", "rank", "separate ms", "fused ms",
                       "dense ms"])])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
