"""Every registered dataset, 1p-frac included, follows the one dataset interface."""

import dataclasses
import inspect
import json

import numpy as np
import pytest

from conftest import run_main
from onepfrac import datasets
from onepfrac.datasets import interface
from onepfrac.errors import UsageError, UserError

# Small enough to render in milliseconds; every other option keeps the dataset's default.
TINY = {
    "1p-frac": dict(samples=3, size=64, points=3000, pad=2),
    "fractaldb": dict(classes=2, instances=5, size=64, points=3000, pad=2, search_size=64, search_points=3000),
    "ofdb": dict(classes=2, size=64, points=3000, pad=2, search_size=64, search_points=3000),
    "3d-ofdb": dict(classes=2, instances=3, size=48, points=2000),
    "visualatom": dict(classes=2, instances=2, size=48),
    "real-image": dict(classes=2, instances=2, size=48),
}
REQUIRED = {"check": 1, "class_params": 3, "render_instance": 4}
OPTIONAL = {"prepare": 1, "counts": 1, "folder_name": 1, "class_images": 3, "file_name": 3, "class_record": 4}


def test_every_registered_dataset_has_a_tiny_config_here():
    assert set(TINY) == set(datasets.DATASETS)


@pytest.fixture(params=sorted(datasets.DATASETS))
def dataset(request):
    name = request.param
    module = datasets.load(name)
    return name, module, datasets.make_config(module, TINY[name])


def test_module_declares_its_name_config_and_hooks_with_the_interfaces_signatures(dataset):
    name, module, config = dataset
    assert module.NAME == name
    assert dataclasses.is_dataclass(module.Config) and module.Config.__dataclass_params__.frozen
    assert "seed" in {f.name for f in datasets.options(module)}
    assert isinstance(config.to_dict(), dict) and json.dumps(config.to_dict())
    for hook, arity in REQUIRED.items():
        assert len(inspect.signature(getattr(module, hook)).parameters) == arity, hook
    for hook, arity in OPTIONAL.items():
        if hasattr(module, hook):
            assert len(inspect.signature(getattr(module, hook)).parameters) == arity, hook
    assert not hasattr(module, "validate")  # one validation hook: check


def test_every_option_has_help_and_its_default_is_among_its_choices(dataset):
    _, module, _ = dataset
    names = {f.name for f in datasets.options(module)}
    helps, choices = getattr(module, "HELP", {}), getattr(module, "CHOICES", {})
    assert set(helps) <= names and set(choices) <= names
    for field in datasets.options(module):
        assert field.name == "seed" or helps.get(field.name), f"--{field.name} has no help"
        if field.name in choices:
            assert field.default in choices[field.name]
    assert datasets.make_config(module, {}) == module.Config()  # the defaults pass their own check


def test_class_params_are_json_deterministic_and_name_their_class(dataset):
    name, module, config = dataset
    shared = datasets.prepare(module, config)
    assert json.loads(json.dumps(shared)) == shared
    for index in range(datasets.counts(module, config)[0]):
        params = module.class_params(config, shared, index)
        assert params["class_index"] == index
        assert json.loads(json.dumps(params)) == params
        assert module.class_params(config, shared, index) == params


def test_images_are_uint8_gray_or_rgb_and_class_images_equals_the_two_steps(dataset):
    name, module, config = dataset
    shared = datasets.prepare(module, config)
    classes, instances = datasets.counts(module, config)
    for index in range(classes):
        params, images = datasets.class_images(module, config, shared, index)
        images = list(images)
        assert len(images) == instances
        assert params == module.class_params(config, shared, index)
        for instance, image in enumerate(images):
            assert image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] == 3)
            assert np.array_equal(image, module.render_instance(config, shared, params, instance))


def test_file_and_folder_names_are_distinct_and_sort_in_numeric_order(dataset):
    _, module, config = dataset
    classes, instances = datasets.counts(module, config)
    names = [datasets.file_name(module, config, c, i) for c in range(classes) for i in range(instances)]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert "/" not in datasets.folder_name(module, config)


def test_a_wrong_type_or_a_negative_seed_is_refused_naming_the_option(dataset):
    name, module, _ = dataset
    with pytest.raises(datasets.ConfigError, match="--seed:? -1"):
        datasets.make_config(module, {**TINY[name], "seed": -1})
    with pytest.raises(datasets.ConfigError, match="--seed:? 'zero'"):
        datasets.make_config(module, {"seed": "zero"})
    with pytest.raises(datasets.ConfigError, match="no option bogus"):
        datasets.make_config(module, {"bogus": 1})


def test_a_value_outside_the_options_choices_is_refused_naming_it(dataset):
    name, module, _ = dataset
    for field in getattr(module, "CHOICES", {}):
        with pytest.raises(datasets.ConfigError, match=f"--{field.replace('_', '-')}:? '?bogus"):
            datasets.make_config(module, {**TINY[name], field: "bogus"})


def test_one_table_holds_every_stream_number_distinct_within_each_dataset():
    assert set(datasets.DATASETS) <= set(interface.STREAMS)
    for name, numbers in interface.STREAMS.items():
        assert len(set(numbers.values())) == len(numbers), name
    for name in datasets.DATASETS:
        module = datasets.load(name)
        constants = {value for key, value in vars(module).items() if key.startswith("STREAM_")}
        assert constants and constants <= set(interface.STREAMS[name].values()), name


def test_errors_share_one_base_carrying_the_exit_code():
    assert issubclass(datasets.ConfigError, UsageError) and datasets.ConfigError.exit_code == 2
    assert issubclass(datasets.UnknownDataset, UsageError)
    assert issubclass(interface.GenerationError, UserError) and interface.GenerationError.exit_code == 1


ON_THE_FLY_REFUSALS = {
    "sigma above 3N": (dict(sigma=100.0), ["--sigma", "100"]),
    "no classes": (dict(samples=0), ["--samples", "0"]),
}


@pytest.mark.parametrize("values, cli", ON_THE_FLY_REFUSALS.values(), ids=ON_THE_FLY_REFUSALS.keys())
def test_on_the_fly_1p_frac_is_refused_with_the_clis_own_line(tmp_path, capsys, values, cli):
    pytest.importorskip("torch")
    from onepfrac.datasets import single_fractal
    from onepfrac.datasets.onthefly import OnTheFlyDataset

    code, out, err = run_main(["--base-savedir", tmp_path / "out", "--no-progress", *cli], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    with pytest.raises(datasets.ConfigError) as refused:
        OnTheFlyDataset("1p-frac", single_fractal.Config(**values))
    assert err == f"python -m onepfrac.generate: error: {refused.value}\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values, cli", ON_THE_FLY_REFUSALS.values(), ids=ON_THE_FLY_REFUSALS.keys())
def test_training_on_the_fly_is_refused_with_the_clis_own_line_before_anything_is_written(
        tmp_path, capsys, values, cli):
    pytest.importorskip("timm")
    from onepfrac.train.cli import main

    _, _, generator_err = run_main(["--base-savedir", tmp_path / "data", "--no-progress", *cli], capsys)
    kwargs = [f"{key}={value}" for key, value in values.items()]
    assert main(["pretrain", "--render", "1p-frac", "--render-kwargs", *kwargs, "--output-dir", str(tmp_path / "run"),
                 "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    message = generator_err.removeprefix("python -m onepfrac.generate: error: ")
    assert err == f"error: --render-kwargs: {message}"
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
