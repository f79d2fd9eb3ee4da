"""Simulation: a plan's federation with many simulated clients, in one process or on Ray.

The deployment's RoundEngine runs the rounds (the plan's strategy, sampling, assigner and
straggler policy); a backend runs each round's cohort, each client made by ``client_fn(cid)``
for its tasks and dropped after. See docs/simulation.md.

```python
from accord.simulation import run_simulation
result = run_simulation("my_workspace", clients=10_000, backend="threads")
result.clients_per_second, result.final("aggregated_model_validation/accuracy")
```
"""

from accord.simulation.backends import BACKENDS, RayBackend, ThreadBackend
from accord.simulation.clients import NumpyClient, Site
from accord.simulation.simulate import RoundSummary, SimulationResult, run_simulation

__all__ = ["BACKENDS", "NumpyClient", "RayBackend", "RoundSummary", "SimulationResult", "Site", "ThreadBackend", "run_simulation"]
