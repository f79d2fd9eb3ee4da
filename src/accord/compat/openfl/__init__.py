"""OpenFL 1.x's task-runner and data-loader classes, on Accord's TaskRunner and DataLoader protocols.

A workspace's code written for OpenFL (``from openfl.federated import PyTorchTaskRunner``)
gets these classes under OpenFL's module names while Accord imports that code (plan/openfl_names.py);
Accord never imports a real ``openfl`` package. The modules: metric.py (``Metric``),
loaders.py (``DataLoader``, ``PyTorchDataLoader``, ``KerasDataLoader``), runner.py
(``TaskRunner``: the data loader, the tasks, ``Metric`` values as Accord metrics),
torch_runner.py (``PyTorchTaskRunner``), keras_runner.py (``KerasTaskRunner``).
"""
