"""pfl-research's simulation on the scale workload, one process per CPU under torchrun:
`torchrun --standalone --nproc_per_node 2 -m fedray.benchmarks.peers.pfl_research SPEC OUT`.

Imports only pfl, torch, MONAI and the bare update (`fedray.benchmarks.bare`). FedAvg (a central SGD
step of rate 1 on the averaged update) over `per_round` of `total` users, each process training its
share of the cohort with one torch thread; no evaluation. A round's time is the interval between
rank 0's `after_central_iteration` callbacks (the first from `on_train_begin`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def run(spec: dict) -> list[float]:
    """Train the workload with pfl; the wall times of training's start and of each round's end."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    from fedray.benchmarks.bare import make_loss, make_network, make_optimizer

    class Network(torch.nn.Module):
        """The workload's network with the `loss` and `metrics` pfl asks of a module."""

        def __init__(self) -> None:
            super().__init__()
            self.net = make_network(spec)
            self.loss_fn = make_loss(spec)

        def forward(self, image):
            return self.net(image)

        def loss(self, image, label, eval=False):
            self.eval() if eval else self.train()
            return self.loss_fn(self(image), label.long())

        def metrics(self, image, label, eval=False):
            return {}

    class Stamps(TrainingProcessCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_begin(self, *, model):
            self.times.append(time.time())
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            self.times.append(time.time())
            return False, Metrics()

    with np.load(spec["data"]) as archive:
        images, labels = archive["images"], archive["labels"]
    users = list(range(spec["total"]))

    def user_dataset(user: int) -> Dataset:
        return Dataset(raw_data=[images[user], labels[user]], user_id=user)

    training = FederatedDataset(user_dataset, get_user_sampler("random", users))
    torch.manual_seed(spec["seed"])
    network = Network()
    model = PyTorchModel(
        model=network,
        local_optimizer_create=lambda params, lr: make_optimizer({**spec, "lr": lr}, params),
        central_optimizer=torch.optim.SGD(network.parameters(), lr=1.0),
    )
    stamps = Stamps()
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=spec["rounds"],
            evaluation_frequency=spec["rounds"] + 1,
            train_cohort_size=spec["per_round"],
            val_cohort_size=0,
        ),
        backend=SimulatedBackend(training_data=training, val_data=training),
        model=model,
        model_train_params=NNTrainHyperParams(
            local_num_epochs=1, local_learning_rate=spec["lr"], local_batch_size=spec["batch_size"]
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=spec["batch_size"]),
        callbacks=[stamps],
    )
    return stamps.times


def main(spec_path: str, out_path: str) -> None:
    import pfl

    spec = json.loads(Path(spec_path).read_text())
    times = run(spec)
    try:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        if len(times) != spec["rounds"] + 1:
            raise RuntimeError(f"pfl ran {len(times) - 1} of {spec['rounds']} rounds")
        Path(out_path).write_text(json.dumps({
            "peer": "pfl",
            "version": getattr(pfl, "__version__", None),
            "processes": int(os.environ.get("WORLD_SIZE", "1")),
            "round_ends": times[1:],
            "round_s": [b - a for a, b in zip(times, times[1:])],
        }, indent=2) + "\n")
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """End the process group pfl opened, in every process, before the interpreter exits.

    pfl-research 0.6.0 leaves it open; torch's gloo threads then meet the interpreter's teardown and a
    process now and then aborts at exit ("terminate called without an active exception", after every
    round was done: once in session 16's windows, then twice in a row in session 17's first, which lost
    that window), which torchrun reports as a failed run. Closing it is the cleanup torch asks for; 8
    stand-alone runs without it and 6 with it all passed, so that it removes the crash is not shown.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
