"""The Flower ClientApp of one digits site: its shard is <data-dir>/site<site>.npz (node config)."""

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digitsbench.digits_mlp import accuracy, build_mlp, get_weights, load_npz, set_weights, train

app = ClientApp()


def _shard(context: Context) -> dict:
    site = int(context.node_config["site"])
    return load_npz(str(Path(str(context.run_config["data-dir"])) / f"site{site}.npz"))


def _model(msg: Message):
    net = build_mlp()
    set_weights(net, msg.content["arrays"].to_numpy_ndarrays())
    return net


@app.train()
def fit(msg: Message, context: Context) -> Message:
    """``epochs`` local epochs of a fresh Adam from the global model; the new weights and the sample count."""
    shard, net = _shard(context), _model(msg)
    server_round = int(msg.content["config"]["server-round"])
    rng = np.random.default_rng(1000 * int(context.node_config["site"]) + server_round)
    cfg = context.run_config
    loss = train(net, shard["x_train"], shard["y_train"], int(cfg["epochs"]), int(cfg["batch-size"]), float(cfg["lr"]), rng)
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(shard["y_train"])})
    return Message(content=RecordDict({"arrays": ArrayRecord(get_weights(net)), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global model's accuracy on this site's validation shard."""
    shard, net = _shard(context), _model(msg)
    metrics = MetricRecord({"accuracy": accuracy(net, shard["x_valid"], shard["y_valid"]), "num-examples": len(shard["y_valid"])})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
