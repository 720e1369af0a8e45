import pytest
import torch
from torch import nn

from losstrail.builtin.models import LeNet, flat_params, load_flat_params
from losstrail.training.fit import fit


def test_flat_params_follow_parameters_order(tiny_model):
    expected = torch.cat([p.detach().flatten() for p in tiny_model.parameters()])
    assert torch.equal(tiny_model.get_flat_params(), expected)
    assert flat_params(tiny_model).dtype == torch.float32


def test_init_from_flat_params_round_trip(tiny_model):
    target = torch.arange(27, dtype=torch.float32)
    tiny_model.init_from_flat_params(target)
    assert torch.equal(tiny_model.get_flat_params(), target)
    assert torch.equal(tiny_model.layers[0].weight.flatten(), target[:8])


def test_lenet_shapes_for_mnist_and_small_images():
    assert LeNet()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert LeNet(input_size=8)(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_a_reference_style_subclass_of_generic_model_trains(tiny_data):
    """A model written for loss-landscape-anim: subclass GenericModel, define forward only."""
    from losstrail import GenericModel

    class Mine(GenericModel):
        def __init__(self):
            super().__init__(optimizer="sgd", learning_rate=0.1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(x)

    torch.manual_seed(0)
    model = Mine()
    before = model.get_flat_params().clone()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tiny_data), batch_size=64)
    run = fit(model, loader, epochs=2, quiet=True)
    assert len(run.trajectory) == 3
    assert torch.equal(torch.from_numpy(run.trajectory.params[0]), before)
    load_flat_params(model, torch.from_numpy(run.trajectory.params[-1]))


@pytest.mark.parametrize("size", [28, 8])
def test_lenet_equals_the_textbook_conv_relu_maxpool_stack(size):
    """Its faster pooling (before the ReLU, as two maxima) gives the same outputs and gradients."""
    torch.manual_seed(0)
    model = LeNet(input_size=size)
    f = model.features
    textbook = nn.Sequential(f[0], nn.ReLU(), nn.MaxPool2d(2), f[3], nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(40, 1, size, size)
    ours, ref = model(x), model.classifier(textbook(x).flatten(1))
    assert torch.equal(ours, ref)
    grads = torch.autograd.grad(ours.sum(), model.parameters())
    for a, b in zip(grads, torch.autograd.grad(ref.sum(), model.parameters())):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_mlp_shape_is_checked():
    from losstrail.builtin.models import MLP

    assert len(MLP(2, 3, num_hidden_layers=0).layers) == 1  # a linear classifier
    with pytest.raises(ValueError, match=r"hidden_dim=0, num_hidden_layers=1: the MLP needs at least one unit"):
        MLP(2, 3, hidden_dim=0)
    with pytest.raises(ValueError, match=r"num_hidden_layers=-1"):
        MLP(2, 3, num_hidden_layers=-1)
