"""accord.native takes OpenFL's native-API idioms beside Accord's own, and runs OpenFL's
native-API quickstart (the Keras listing) on digits to >= 95% on a held-out split."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import accord.native as fx
from accord.errors import AccordError

#: OpenFL's native-API quickstart, as its documentation gives it (securefederatedai/openfl,
#: docs/developer_guide/running_the_federation.notebook.rst, Steps 1-6 with "Example 1", the
#: Keras model; Apache-2.0, Copyright (C) 2020-2023 Intel Corporation). The two OpenFL import
#: lines are Accord's; the block marked "digits" stands where MNIST was loaded (the docs say
#: only "train_images, train_labels, valid_images, valid_labels ... classes"): scikit-learn's
#: 8x8 digits upscaled to MNIST's 28x28 and flattened as OpenFL's Keras MNIST example does,
#: 20% held out, one-hot labels. Everything from fx.init on is the documentation's text.
LISTING = '''\
import accord.native as fx
from accord.native import FederatedModel, FederatedDataSet

# --- digits, where the listing loads MNIST ---
import numpy as np
from keras import Sequential
from keras.layers import Dense
from keras.utils import to_categorical
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

digits = load_digits()
rows = np.arange(28) * 8 // 28
images = (digits.images[:, rows][:, :, rows] / 16.0 - 0.5).reshape(-1, 784)
train_images, valid_images, train_y, valid_y = train_test_split(
    images, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
train_labels, valid_labels = to_categorical(train_y, 10), to_categorical(valid_y, 10)
classes = 10
# --- end of digits ---

collaborator_list = ['one', 'two']
fx.init('keras_cnn_mnist', col_names=collaborator_list)

fl_data = FederatedDataSet(train_images, train_labels, valid_images, valid_labels, batch_size=32, num_classes=classes)

def build_model(feature_shape,classes):
    #Defines the MNIST model
    model = Sequential()
    model.add(Dense(64, input_shape=feature_shape, activation='relu'))
    model.add(Dense(64, activation='relu'))
    model.add(Dense(classes, activation='softmax'))

    model.compile(optimizer='adam', loss='categorical_crossentropy',metrics=['accuracy'])
    return model

fl_model = FederatedModel(build_model, data_loader=fl_data)

experiment_collaborators = {col_name:col_model for col_name, col_model \\
                                 in zip(collaborator_list, fl_model.setup(len(collaborator_list)))}

final_fl_model = fx.run_experiment(experiment_collaborators, override_config={"aggregator.settings.rounds_to_train": 5})
'''

#: the test's own lines after the listing: save_native, the held-out accuracy, a Keras refusal
CHECKS = '''
try:
    FederatedModel(build_model, optimizer=lambda params: None, data_loader=fl_data)
except Exception as exc:
    print("refused:", exc)
written = final_fl_model.save_native('final_model')
print("saved:", written)
print("held-out accuracy:", (final_fl_model.predict(valid_images, verbose=0).argmax(axis=1) == valid_y).mean())
'''


def test_openfl_quickstart_listing_reaches_95_percent_and_saves_native(tmp_path: Path) -> None:
    script = tmp_path / "listing.py"
    script.write_text(LISTING + CHECKS, encoding="utf-8")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    accuracy = re.search(r"held-out accuracy: ([0-9.]+)", done.stdout)
    assert accuracy, done.stdout[-2000:]
    assert float(accuracy.group(1)) >= 0.95
    assert "refused: optimizer= a function of the parameters is torch's idiom, not Keras's" in done.stdout
    assert "round 4 of 5" in done.stdout and "final validation of the last model" in done.stdout
    saved = tmp_path / "final_model.keras"
    assert f"saved: {saved.name}" in done.stdout and saved.is_file()
    check = (
        "import keras, sys; m = keras.saving.load_model(sys.argv[1], safe_mode=True); "
        "print(getattr(m, 'optimizer', None) is None, [tuple(w.shape) for w in m.get_weights()])"
    )
    loaded = subprocess.run([sys.executable, "-c", check, str(saved)], capture_output=True, text=True, timeout=120, env=env)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.startswith("True") and "(784, 64)" in loaded.stdout  # no optimizer, the listing's layers


# -- one-hot labels ---------------------------------------------------------------------


def _blobs(n: int = 240, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable 2-D clusters: any working model learns them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = np.array([[4.0 * np.cos(2 * np.pi * k / classes), 4.0 * np.sin(2 * np.pi * k / classes)] for k in range(classes)])
    return (centers[y] + rng.normal(scale=0.5, size=(n, 2))).astype(np.float32), y


def test_one_hot_labels_become_class_indices() -> None:
    x, y = _blobs()
    data = fx.FederatedDataSet(x[:200], np.eye(3)[y[:200]], x[200:], y[200:], batch_size=16)
    assert data.one_hot and data.num_classes == 3
    assert np.array_equal(data.y_train, y[:200]) and np.array_equal(data.y_valid, y[200:])
    assert data.X_train.shape == (200, 2) and data.X_valid.dtype == np.float32
    shards = data.split(2)
    assert all(s.one_hot and s.num_classes == 3 for s in shards)
    indices = fx.FederatedDataSet(x[:200], y[:200], x[200:], np.eye(3)[y[200:]])
    assert not indices.one_hot and indices.num_classes == 3  # the training labels' form decides


@pytest.mark.parametrize(
    "labels, shown",
    [
        (np.full((10, 3), 0.5), "is not one-hot"),
        (np.array([[1, 1, 0]] * 10), "is not one-hot"),
        (np.array([[2, 0, 0]] * 10), "is not one-hot"),
    ],
)
def test_other_2d_labels_are_refused_in_one_line(labels: np.ndarray, shown: str) -> None:
    x = np.zeros((10, 2))
    with pytest.raises(AccordError, match=shown) as raised:
        fx.FederatedDataSet(x, labels, x, np.zeros(10, dtype=int))
    assert "y_train has shape (10, 3)" in str(raised.value) and "\n" not in str(raised.value)


def test_one_hot_widths_and_num_classes_must_agree() -> None:
    x = np.zeros((6, 2))
    with pytest.raises(AccordError, match="y_train is one-hot with 3 columns but y_valid with 4"):
        fx.FederatedDataSet(x, np.eye(3)[[0, 1, 2] * 2], x, np.eye(4)[[0, 1, 2] * 2])
    with pytest.raises(AccordError, match="num_classes is 5 but the one-hot labels have 3 columns"):
        fx.FederatedDataSet(x, np.eye(3)[[0, 1, 2] * 2], x, [0, 1, 2] * 2, num_classes=5)


# -- build_model(feature_shape, num_classes) ---------------------------------------------------


def test_build_model_gets_feature_shape_and_num_classes_or_nothing() -> None:
    torch = pytest.importorskip("torch")
    x, y = _blobs()
    data = fx.FederatedDataSet(x[:200], y[:200], x[200:], y[200:])
    seen: list[tuple[object, ...]] = []

    def openfl_style(feature_shape, classes):  # type: ignore[no-untyped-def]
        seen.append((feature_shape, classes))
        return torch.nn.Linear(feature_shape[0], classes)

    model = fx.FederatedModel(openfl_style, data_loader=data)
    assert seen == [((2,), 3)] and model.model.out_features == 3

    class Net(torch.nn.Module):  # OpenFL's torch form: the class itself, built with no arguments
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(x)

    assert isinstance(fx.FederatedModel(build_model=Net, data_loader=data).model, Net)
    assert fx.FederatedModel(lambda: torch.nn.Linear(2, 3), data_loader=data).model.in_features == 2


@pytest.mark.parametrize(
    "builder, shown",
    [
        (lambda a, b, c: None, "takes neither no arguments nor (feature_shape, num_classes)"),
        (lambda *, shape: None, "takes neither no arguments nor (feature_shape, num_classes)"),
        (lambda shape: None, "takes neither no arguments nor (feature_shape, num_classes)"),
    ],
)
def test_builders_of_other_signatures_are_refused_in_one_line(builder, shown: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AccordError, match=re.escape(shown)) as raised:
        x, y = _blobs()
        fx.FederatedModel(builder, data_loader=fx.FederatedDataSet(x, y, x, y))
    assert "\n" not in str(raised.value)


def test_a_two_argument_builder_without_data_says_what_to_pass() -> None:
    with pytest.raises(AccordError, match="pass data_loader=FederatedDataSet"):
        fx.FederatedModel(lambda feature_shape, classes: None)


# -- loss_fn= and optimizer functions (OpenFL's torch idiom) --------------------------------------


def test_torch_optimizer_function_and_loss_fn_federate_with_one_hot_labels(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    x, y = _blobs(400)
    data = fx.FederatedDataSet(x[:320], np.eye(3)[y[:320]], x[320:], np.eye(3)[y[320:]], batch_size=16)
    made: list[torch.optim.Optimizer] = []
    targets: list[torch.Tensor] = []

    def optimizer(params):  # type: ignore[no-untyped-def]
        made.append(torch.optim.SGD(params, lr=0.1))
        return made[-1]

    def cross_entropy(output, target):  # type: ignore[no-untyped-def]
        targets.append(target)
        return F.cross_entropy(input=output, target=target)

    fx.init("torch_cnn_mnist", log_level="WARNING")  # OpenFL's template name: Accord's torch_digits
    model = fx.FederatedModel(lambda: torch.nn.Linear(2, 3), optimizer=optimizer, loss_fn=cross_entropy, data_loader=data)
    final = fx.run_experiment(fx.setup(num_collaborators=2, model=model), {"aggregator.settings.rounds_to_train": 3}, workspace=tmp_path)
    assert isinstance(final, torch.nn.Linear)
    assert len(made) >= 3 and all(isinstance(o, torch.optim.SGD) for o in made)  # one per site's runner, at least
    assert targets and all(t.shape[1:] == (3,) and t.is_floating_point() for t in targets)  # one-hot, as given
    result = fx.last_run
    assert result is not None and result.final("aggregated_model_validation/accuracy") >= 0.95
    predicted = final(torch.from_numpy(x[320:])).argmax(dim=1).numpy()
    assert (predicted == y[320:]).mean() >= 0.95

    saved = final.save_native(tmp_path / "final_pytorch_model")
    state = torch.load(saved, weights_only=True)
    assert saved == tmp_path / "final_pytorch_model" and set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], final.weight.detach())
    assert len(pickle.dumps(final)) > 0  # torch.save(final_model) still works with save_native on it


def test_loss_fn_with_index_labels_gets_indices() -> None:
    torch = pytest.importorskip("torch")
    x, y = _blobs()
    data = fx.FederatedDataSet(x[:200], y[:200], x[200:], y[200:], batch_size=50)
    targets: list[torch.Tensor] = []

    def loss(output, target):  # type: ignore[no-untyped-def]
        targets.append(target)
        return torch.nn.functional.cross_entropy(output, target)

    model = fx.FederatedModel(lambda: torch.nn.Linear(2, 3), loss_fn=loss, data_loader=data)
    model.runner.train(data, epochs=1)
    assert targets and all(t.dim() == 1 and not t.is_floating_point() for t in targets)


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"loss": "cross_entropy", "loss_fn": lambda o, t: o}, "both loss and loss_fn"),
        ({"optimizer": "adam"}, "optimizer is a str"),
        ({"optimizer": lambda params: "adam"}, "optimizer= returned a str, not a torch.optim.Optimizer"),
    ],
)
def test_bad_torch_loss_and_optimizer_forms_are_refused_in_one_line(kwargs: dict, shown: str) -> None:
    torch = pytest.importorskip("torch")
    x, y = _blobs()
    with pytest.raises(AccordError, match=re.escape(shown)) as raised:
        fx.FederatedModel(lambda: torch.nn.Linear(2, 3), data_loader=fx.FederatedDataSet(x, y, x, y), **kwargs)
    assert "\n" not in str(raised.value)


def test_an_optimizer_object_is_refused() -> None:
    torch = pytest.importorskip("torch")
    shared = torch.optim.Adam(torch.nn.Linear(2, 3).parameters())
    with pytest.raises(AccordError, match="every site needs its own optimizer"):
        fx.FederatedModel(lambda: torch.nn.Linear(2, 3), optimizer=shared)


def test_save_native_of_a_model_without_a_framework_file_says_what_to_do(tmp_path: Path) -> None:
    from accord.runners.numpy_runner import SklearnLinearRunner

    x, y = _blobs()
    model = fx.FederatedModel(runner=lambda: SklearnLinearRunner(classes=3, n_features=2), data_loader=fx.FederatedDataSet(x, y, x, y))
    with pytest.raises(AccordError, match="save_native writes torch and Keras models") as raised:
        model.save_native(tmp_path / "m")
    assert "save_state" in str(raised.value)


def test_init_col_names_name_the_collaborators() -> None:
    """OpenFL's ``fx.init(..., col_names=[...])``: setup's default names, the only names run_experiment takes."""
    try:
        fx.init("torch_digits", log_level=None, col_names=["one", "two"])
        with pytest.raises(AccordError, match=r"not among fx\.init's col_names"):
            fx.run_experiment({"three": object()})  # type: ignore[dict-item]
        with pytest.raises(AccordError, match="must be distinct"):
            fx.init("torch_digits", log_level=None, col_names=["one", "one"])
    finally:
        fx.init("torch_digits", log_level=None)
