"""Reading and editing a model's structure: one traced forward pass gives each approximable
layer's input shape and which layers feed a ReLU; :func:`set_module` swaps a layer.

The response a layer is fitted to (after the ReLU, or linear) depends on what follows it,
which a module list cannot tell when the model applies ``F.relu`` in its ``forward``; a
TorchFunctionMode sees every ReLU call, however it is written.
"""

from __future__ import annotations

import torch
from torch import nn

_RELUS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.Tensor.relu,
          torch.Tensor.relu_}


class _ReluInputs(torch.overrides.TorchFunctionMode):
    """Records the storage of every tensor a ReLU is applied to, however it is called:
    ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, in place or not."""

    def __init__(self):
        super().__init__()
        self.ptrs = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            x = args[0] if args else (kwargs or {}).get("input")
            if isinstance(x, torch.Tensor):
                self.ptrs.add(x.data_ptr())
        return func(*args, **(kwargs or {}))


def trace(model, x):
    """One traced forward: the input shape (batch 1) of every Conv2d/Linear, and the names
    of those whose output goes straight into a ReLU (through Identity modules, e.g. folded
    BatchNorms), whether the model applies it as a module or as a function."""
    shapes, outputs, hooks = {}, {}, []

    def record(name):
        def pre(mod, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: inputs unchanged

        def post(mod, args, out):
            outputs[name] = out  # kept alive, so no later tensor reuses its memory
        return pre, post

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            pre, post = record(name)
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    relus = _ReluInputs()
    try:
        with torch.no_grad(), relus:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, {name for name, out in outputs.items() if out.data_ptr() in relus.ptrs}
