"""lrsa.pipeline.trace: which layers feed a ReLU, however the model applies it."""

import torch
from torch import nn

from lrsa.pipeline import LayerPlan, compress


class FunctionalRelu(nn.Module):
    """ReLUs applied as functions, in every spelling a model may use."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.c4 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.nn.functional.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = self.c3(x).relu_()
        x = self.c4(x).relu()
        return self.fc(x.mean((2, 3)))


def test_relu_response_reaches_functional_relus():
    torch.manual_seed(0)
    model = FunctionalRelu().eval()
    calib = torch.randn(64, 1, 8, 8)  # one tensor of images is calibration data too
    _, rep = compress(model, calib, {n: LayerPlan(size=0.6) for n in
                                     ("c2", "c3", "c4", "fc")}, progress=False, fallback=None)
    responses = {r["name"]: r.get("response") for r in rep.layers}
    assert responses == {"c1": None, "c2": "relu", "c3": "relu", "c4": "relu",
                         "fc": "linear"}
