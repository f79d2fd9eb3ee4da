"""The source collector: notebook (__main__) functions and classes become one module's source."""

from __future__ import annotations

import json

import pytest
from conftest import run_cell

from accord.errors import AccordError
from accord.interactive.source import collect_module, find_definition, import_path, is_literal, referenced_globals

IMPORTS = '''
import json
import numpy as np
from json import decoder
from math import sqrt
from collections import OrderedDict as OD
'''


def notebook(*cells: str) -> dict:
    namespace: dict = {}
    for cell in (IMPORTS, *cells):
        run_cell(cell, namespace)
    return namespace


def load(text: str) -> dict:
    """Run a generated module in a fresh namespace, as a site imports it."""
    namespace: dict = {"__name__": "generated"}
    exec(compile(text, "<generated>", "exec"), namespace)
    return namespace


def test_function_with_imports_and_literals_round_trips() -> None:
    nb = notebook(
        '''
SCALE = 2.5
NAMES = ("a", "b")
TABLE = {"k": [1, 2, None], "t": (True, b"x")}

def score(values, names=NAMES):
    return float(np.sum(values)) * SCALE + sqrt(16) + len(json.dumps(TABLE["k"])) + len(OD(a=1)) + len(names)
'''
    )
    module = collect_module([nb["score"]], "generated")
    for line in ("import json", "import numpy as np", "from math import sqrt", "from collections import OrderedDict as OD",
                 "SCALE = 2.5", "NAMES = ('a', 'b')", "TABLE = {'k': [1, 2, None], 't': (True, b'x')}"):
        assert line in module.text.splitlines(), line
    assert "decoder" not in module.text  # imported in the notebook but not used
    assert module.packages == {"json", "numpy", "math", "collections"}
    assert load(module.text)["score"]([1, 2]) == nb["score"]([1, 2])


def test_submodule_imports_are_written_as_from_imports_from_the_shortest_package() -> None:
    nb = notebook("from json.decoder import JSONDecoder\n\ndef decode(text):\n    return decoder.JSONDecoder().decode(text) + JSONDecoder().decode(text)\n")
    text = collect_module([nb["decode"]], "m").text
    assert "from json import decoder" in text
    assert "from json import JSONDecoder" in text  # json.decoder.JSONDecoder is json's JSONDecoder
    assert load(text)["decode"]("[1]") == [1, 1]


def test_main_functions_and_classes_are_collected_transitively_dependencies_first() -> None:
    nb = notebook(
        '''
import functools

def offset():
    return 10

class Base:
    def value(self):
        return offset()
''',
        '''
class Model(Base):
    """A notebook class: found through its methods (no file behind it)."""

    factor = 3

    def __init__(self, x):
        self.x = x

    @property
    def doubled(self):
        return helper(self.x)

    @staticmethod
    def make():
        return Model(1)

    @classmethod
    def named(cls):
        return cls.__name__

    def total(self):
        return self.value() + self.doubled * self.factor


@functools.lru_cache(maxsize=None)
def helper(x):
    return 2 * x


def build():
    return Model.make()
''',
    )
    text = collect_module([nb["build"]], "m").text
    assert text.index("class Base") < text.index("class Model(Base)")  # a base class must exist first
    assert "@functools.lru_cache(maxsize=None)" in text and "import functools" in text
    assert '"""A notebook class: found through its methods (no file behind it)."""' in text
    generated = load(text)
    model = generated["build"]()
    assert model.total() == nb["build"]().total() == 16
    assert generated["Model"].named() == "Model"


def test_taskinterface_decorators_are_left_out_and_others_kept() -> None:
    nb = notebook(
        '''
class Registry:
    def register_fl_task(self, **mapping):
        return lambda f: f

    def add_kwargs(self, **kwargs):
        return lambda f: f

TI = Registry()

def twice(f):
    return f

@TI.add_kwargs(
    epochs=2,
)
@twice
@TI.register_fl_task(model="m", data_loader="d")
def train(m, d, epochs=1):
    return {"epochs": epochs}
'''
    )
    text = collect_module([nb["train"]], "m").text
    assert "TI" not in text and "register_fl_task" not in text and "epochs=2," not in text
    assert "@twice\ndef train(m, d, epochs=1):" in text
    assert load(text)["train"](None, None) == {"epochs": 1}


def test_local_names_that_shadow_a_refused_global_are_fine() -> None:
    nb = notebook(
        '''
x = np.zeros(3)

def f(x):
    total = [x for x in range(3)]
    return lambda x: x + sum(total)
'''
    )
    assert referenced_globals(find_definition(nb["f"]).source) == ["range", "sum"]
    assert load(collect_module([nb["f"]], "m").text)["f"](0)(1) == 4


@pytest.mark.parametrize(
    "cell, message, fix",
    [
        ("data = np.zeros(3)\n\ndef f():\n    return data\n", "f uses the global 'data', a ndarray", "create it inside f"),
        ("class C:\n    def m(self):\n        return 1\n\nc = C()\n\ndef f():\n    return c.m()\n", "f uses the global 'c', a C", "add_kwargs"),
        ("def f():\n    return missing_name\n", "f uses 'missing_name', which is not defined", "define missing_name"),
        ("NAN = float('nan')\n\ndef f():\n    return NAN\n", "f uses the global 'NAN', a float", "make it a literal"),
    ],
)
def test_a_global_that_cannot_travel_is_refused_by_name(cell: str, message: str, fix: str) -> None:
    nb = notebook(cell)
    with pytest.raises(AccordError, match=message) as info:
        collect_module([nb["f"]], "m")
    assert fix in str(info.value.fix)


def test_lambdas_nested_definitions_and_instances_are_refused() -> None:
    nb = notebook("build = lambda: 1\n\ndef outer():\n    def inner():\n        return 1\n    return inner\n")
    with pytest.raises(AccordError, match=r"lambda.*has no source"):
        collect_module([nb["build"]], "m")
    with pytest.raises(AccordError, match=r"outer.<locals>.inner is defined inside another function"):
        collect_module([nb["outer"]()], "m")


def test_two_objects_under_one_name_are_refused() -> None:
    nb = notebook("def helper():\n    return 1\n", "alias = helper\n\ndef helper():\n    return 2\n\ndef f():\n    return alias() + helper()\n")
    with pytest.raises(AccordError, match="both be named 'helper'"):
        collect_module([nb["f"]], "m")


def test_import_paths_of_main_and_importable_objects() -> None:
    nb = notebook("def f():\n    return 1\n")
    assert import_path(nb["f"], "src.experiment") == "src.experiment.f"
    assert import_path(json.dumps, "src.experiment") == "json.dumps"
    assert collect_module([json.dumps], "only imports").text == '"""only imports"""\n'
    with pytest.raises(AccordError, match="cannot be imported by name"):
        import_path(len.__call__, "src.experiment")


def test_literals() -> None:
    assert all(is_literal(v) for v in (1, 2.5, "s", b"b", None, True, 1j, (1, [2, {"a": {3}}])))
    assert not any(is_literal(v) for v in (float("inf"), object(), [object()], {1: json}))


def test_a_main_function_under_another_name_gets_one_alias_line() -> None:
    nb = notebook("def mean_loss(values):\n    return sum(values) / len(values)\n\nloss = mean_loss\n",
                  "def a(v):\n    return loss(v)\n\ndef b(v):\n    return loss(v) * 2\n")
    text = collect_module([nb["a"], nb["b"]], "m").text
    assert text.count("loss = mean_loss") == 1 and text.index("def mean_loss") < text.index("loss = mean_loss")
    assert load(text)["b"]([1, 3]) == 4
