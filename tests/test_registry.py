import pytest

from losstrail import _registry
from losstrail.builtin.data import DATAMODULES
from losstrail.builtin.models import MODEL_BUILDERS
from losstrail.planes.directions import DIRECTION_BUILDERS
from losstrail.training.fit import OPTIMIZER_BUILDERS


@pytest.mark.parametrize(
    "names, implementations",
    [
        (_registry.OPTIMIZERS, OPTIMIZER_BUILDERS),
        (_registry.DIRECTIONS, DIRECTION_BUILDERS),
        (_registry.DATASETS, DATAMODULES),
        (_registry.MODELS, MODEL_BUILDERS),
    ],
)
def test_every_name_has_one_implementation(names, implementations):
    assert tuple(implementations) == names


def test_check_choice_names_argument_value_and_choices():
    with pytest.raises(ValueError, match=r"reduction_method='pcaa' is not known; expected one of 'pca', 'random'"):
        _registry.check_choice("reduction_method", "pcaa", _registry.DIRECTIONS)


def test_every_public_name_resolves_to_what_it_says():
    """A submodule must never shadow a public function of the same name (losstrail.render, .project)."""
    import importlib
    import pkgutil

    import losstrail

    for module in pkgutil.walk_packages(losstrail.__path__, "losstrail."):
        if module.name != "losstrail.__main__":  # that one runs the command
            importlib.import_module(module.name)
    for name in losstrail.__all__:
        value = getattr(losstrail, name)
        assert not isinstance(value, type(losstrail)), name
