"""Accord's interactive API: from a notebook, a workspace archive for the sites and a running aggregator.

```python
from accord.interactive import DataInterface, Federation, FLExperiment, ModelInterface, TaskInterface

federation = Federation(workspace="fed", aggregator_address="agg.example.org", port=50051)
MI = ModelInterface(model=build_model, optimizer=build_optimizer, framework="torch")
TI = TaskInterface()       # @TI.register_fl_task(...) / @TI.add_kwargs(...) on train and validate
experiment = FLExperiment(federation, "digits")
archive = experiment.prepare_workspace_distribution(MI, TI, MyData(batch_size=32), rounds_to_train=5)
# each site: fx workspace import, fx collaborator generate-cert-request; here:
federation.certify_collaborator("col_site1_to_agg_cert_request.zip")
run = experiment.start_experiment()   # the sites: fx collaborator start -n NAME
run.wait(); model = run.get_last_model()
```

The archive carries source code and the plan, never pickled objects. Importing this
package loads no ML framework. See docs/interactive-api.md.
"""

from accord.interactive.data import DataInterface
from accord.interactive.experiment import ExperimentRun, FLExperiment
from accord.interactive.federation import Federation
from accord.interactive.model import ModelInterface
from accord.interactive.tasks import TaskInterface

__all__ = ["DataInterface", "ExperimentRun", "FLExperiment", "Federation", "ModelInterface", "TaskInterface"]
