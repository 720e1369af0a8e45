"""The built-in networks as plain ``nn.Module``s: an MLP and LeNet-5, no Lightning.

The default job trains these with losstrail's own loop, so it never imports Lightning.
``losstrail.MLP`` and ``losstrail.LeNet`` (in ``losstrail.builtin.models``) are the same networks
on the reference's ``GenericModel`` base, a LightningModule: built from the same parts in
the same order, they draw the same initial weights for the same seed and have the same
parameter names, so weights saved by one load into the other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from losstrail._checks import check_training_memory, mlp_parameters
from losstrail._registry import MODELS, check_choice

__all__ = ["LeNet", "MLP", "MaxPool2x2", "built_model", "lenet_parts", "make_model", "mlp_layers"]


def mlp_layers(input_dim: int, num_classes: int, hidden_dim: int = 50, num_hidden_layers: int = 1) -> nn.Sequential:
    """Linear layers with ReLU between them: ``input_dim`` -> ``hidden_dim`` x ``num_hidden_layers`` -> classes.

    >>> mlp_layers(2, 3, 4)
    Sequential(
      (0): Linear(in_features=2, out_features=4, bias=True)
      (1): ReLU()
      (2): Linear(in_features=4, out_features=3, bias=True)
    )
    """
    if int(hidden_dim) < 1 or int(num_hidden_layers) < 0:
        raise ValueError(
            f"hidden_dim={hidden_dim!r}, num_hidden_layers={num_hidden_layers!r}: the MLP needs at least one "
            "unit per hidden layer and zero or more hidden layers (0 is a linear classifier)"
        )
    sizes = {"input_dim": input_dim, "num_classes": num_classes, "num_hidden_layers": num_hidden_layers,
             "hidden_dim": hidden_dim}  # fmt: skip
    check_training_memory(sizes, mlp_parameters(input_dim, hidden_dim, num_hidden_layers, num_classes),
                          "Pass a smaller num_hidden_layers= or hidden_dim=")  # fmt: skip
    widths = [input_dim] + [hidden_dim] * num_hidden_layers
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


class MaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2)`` as two elementwise maxima of strided views: the same numbers, faster.

    PyTorch's CPU max pooling also computes the index of each maximum and runs at a sixth
    of the speed of memory (measured 59 ms against 9 ms on 3,000 6x28x28 maps); under
    ``vmap``, in the grid, the maxima batch as any elementwise op. Odd rows and columns
    are dropped, as ``MaxPool2d`` does.

    >>> x = torch.randn(2, 3, 7, 6)
    >>> torch.equal(MaxPool2x2()(x), nn.functional.max_pool2d(x, 2))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        rows = torch.maximum(x[..., 0:h:2, :w], x[..., 1:h:2, :w])
        return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def lenet_parts(in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> tuple[nn.Module, nn.Module]:
    """LeNet-5's ``(features, classifier)`` for ``input_size`` x ``input_size`` images.

    >>> features, classifier = lenet_parts(input_size=8)
    >>> classifier(features(torch.zeros(2, 1, 8, 8)).flatten(1)).shape
    torch.Size([2, 10])
    """
    pad = 2 if input_size >= 16 else 4  # 28 -> 28 -> 14 -> 10 -> 5; 8 -> 12 -> 6 -> 2 -> 1
    features = nn.Sequential(
        # Pooling before the ReLU gives the same numbers (both keep order) at a quarter of the ReLU's work.
        nn.Conv2d(in_channels, 6, kernel_size=5, padding=pad),
        MaxPool2x2(),
        nn.ReLU(),
        nn.Conv2d(6, 16, kernel_size=5),
        MaxPool2x2(),
        nn.ReLU(),
    )
    with torch.no_grad():
        n_flat = features(torch.zeros(1, in_channels, input_size, input_size)).numel()
    classifier = nn.Sequential(
        nn.Linear(n_flat, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return features, classifier


class MLP(nn.Module):
    """A multilayer perceptron with ReLU activations, as a plain ``nn.Module``.

    The same network as ``losstrail.MLP`` (its ``learning_rate`` and ``optimizer`` are what
    ``fit`` trains it with by default), without Lightning.

    >>> MLP(input_dim=2, num_classes=3)(torch.zeros(4, 2)).shape
    torch.Size([4, 3])
    """

    # Cross-entropy, as ``GenericModel``; being ``F.cross_entropy`` itself lets the grid use its faster equivalent.
    loss_fn = staticmethod(F.cross_entropy)

    def __init__(self, input_dim: int, num_classes: int, hidden_dim: int = 50, num_hidden_layers: int = 1,
                 learning_rate: float = 5e-3, optimizer="adam"):  # fmt: skip
        super().__init__()
        self.learning_rate, self.optimizer = learning_rate, optimizer
        self.layers = mlp_layers(input_dim, num_classes, hidden_dim, num_hidden_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class LeNet(nn.Module):
    """LeNet-5 as a plain ``nn.Module``: the same network as ``losstrail.LeNet``, without Lightning.

    >>> LeNet(input_size=8)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    loss_fn = staticmethod(F.cross_entropy)

    def __init__(self, learning_rate: float = 1e-3, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 optimizer="adam"):  # fmt: skip
        super().__init__()
        self.learning_rate, self.optimizer = learning_rate, optimizer
        self.features, self.classifier = lenet_parts(in_channels, num_classes, input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _mlp(datamodule, **kwargs) -> MLP:
    shape = datamodule.input_dim
    input_dim = int(np.prod(shape)) if isinstance(shape, tuple) else shape  # images are flattened
    return MLP(input_dim=input_dim, num_classes=datamodule.num_classes, **kwargs)


def _lenet(datamodule, **kwargs) -> LeNet:
    shape = datamodule.input_dim
    if not isinstance(shape, tuple) or len(shape) != 3:
        raise ValueError(
            f"model='lenet' needs image data (channels, height, width); this dataset's inputs are {shape!r}. "
            "Use model='mlp', or dataset='digits' or 'mnist'"
        )
    kwargs.pop("hidden_dim", None)  # the MLP's shape options mean nothing to LeNet
    kwargs.pop("num_hidden_layers", None)
    return LeNet(in_channels=shape[0], num_classes=datamodule.num_classes, input_size=shape[1], **kwargs)


MODEL_BUILDERS = {"mlp": _mlp, "lenet": _lenet}


def make_model(name: str, datamodule, **kwargs) -> nn.Module:
    """A built-in network by name (``'mlp'`` or ``'lenet'``), sized for ``datamodule``: a plain ``nn.Module``.

    ``kwargs`` are the network's (``hidden_dim``, ``num_hidden_layers``, ``learning_rate``,
    ``optimizer``); ``fit`` trains it with its ``optimizer`` at its ``learning_rate``.
    """
    return built_model(check_choice("model", name, MODELS), datamodule, **kwargs)


def built_model(name: str, datamodule, **kwargs) -> nn.Module:
    """``make_model`` for a name checked already where the call came in (``losstrail run``'s ``--model``)."""
    kwargs.pop("gpus", None)  # the reference's option; the device is chosen by ``fit``
    if kwargs.get("custom_optimizer") is not None:  # the reference's way to pass a callable optimizer
        kwargs["optimizer"] = kwargs["custom_optimizer"]
    kwargs.pop("custom_optimizer", None)
    model = MODEL_BUILDERS[name](datamodule, **kwargs)
    model.recipe = {"name": name, **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float))}}
    return model
