"""Fine-tunes a small compressed network; started by tests/test_distributed.py under
``torchrun --nproc_per_node=2`` (and called in-process for the one-process reference)."""

import argparse
import os

import torch
from torch import nn

from lrsa import distributed
from lrsa.data import make_loader
from lrsa.pipeline import finetune, load_compressed

GLOBAL_BATCH = 16


class TinyNet(nn.Module):
    """No BatchNorm, no dropout: K processes then take exactly one process's steps."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(96, 3, 8, 8, generator=g), torch.randint(0, 4, (96,), generator=g)


def run(compressed_path, teacher_path, epochs, checkpoint=None, die_after_epoch=None):
    """Fine-tune the saved compressed TinyNet with distillation; returns its state dict and
    the number of images this process's copy saw."""
    model = load_compressed(compressed_path, build=TinyNet)[0]
    teacher = TinyNet()
    teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
    x, y = images()
    loader = make_loader(x, y, GLOBAL_BATCH, train=True, mean=None, std=None, pad=1, seed=3,
                         shard=True)

    def stop(epoch, _stats):
        if epoch + 1 == die_after_epoch and distributed.is_main():
            os._exit(3)  # a crash right after the epoch's checkpoint

    seen = []
    model.register_forward_pre_hook(lambda _m, inputs: seen.append(len(inputs[0])))
    finetune(model, loader, epochs=epochs, lr=0.05, teacher=teacher, checkpoint=checkpoint,
             on_epoch_end=stop)
    return model.state_dict(), sum(seen)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("compressed")
    p.add_argument("teacher")
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--checkpoint")
    p.add_argument("--die-after-epoch", type=int)
    a = p.parse_args()
    rank, world = distributed.setup()
    state, seen = run(a.compressed, a.teacher, a.epochs, a.checkpoint, a.die_after_epoch)
    seen = distributed.gather_to_main(seen)
    if distributed.is_main():
        torch.save({"state_dict": state, "world_size": world, "seen": seen}, a.out)
    distributed.teardown()
