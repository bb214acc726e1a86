"""Flower's Ray simulation (flwr[simulation]) on the scale workload: `python -m fedray.benchmarks.peers.flower SPEC OUT`.

Run in the peer's own interpreter (Flower pins its own Ray); imports only Flower, torch, MONAI and the
bare update (`fedray.benchmarks.bare`). FedAvg over `per_round` of `total` virtual SuperNodes, one
CPU and one torch thread each, no client-side evaluation; a round's time is the interval between the
server's per-round callbacks (`evaluate_fn`, called before round 1 and after each round).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path


@functools.lru_cache(maxsize=None)
def _hospitals(path: str):
    """The cases of every hospital, read once per Flower worker process (as fedray keeps them in Ray's store)."""
    import numpy as np

    with np.load(path) as archive:
        return archive["images"], archive["labels"]


def build_apps(spec: dict, stamps: list[float], trained: list[int]):
    """Flower's ServerApp and ClientApp for the workload; the server appends a wall time to `stamps` and the
    count of error-free replies to `trained` per round."""
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedray.benchmarks.bare import hospital_batches, make_loss, make_network, update

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        model = make_network(spec)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        images, labels = _hospitals(spec["data"])
        hospital = int(context.node_config["partition-id"])
        batches = hospital_batches(images[hospital], labels[hospital], spec["batch_size"])
        loss = update(model, make_loss(spec), spec, batches, spec["local_steps"])
        content = RecordDict({
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(images[hospital])}),
        })
        return Message(content=content, reply_to=msg)

    class CountingFedAvg(FedAvg):
        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            trained.append(sum(not reply.has_error() for reply in replies))
            return super().aggregate_train(server_round, replies)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(spec["seed"])
        strategy = CountingFedAvg(
            fraction_train=spec["per_round"] / spec["total"],
            fraction_evaluate=0.0,
            min_train_nodes=spec["per_round"],
            min_available_nodes=spec["total"],
        )

        def stamp(server_round: int, arrays) -> None:
            stamps.append(time.time())

        strategy.start(grid=grid, initial_arrays=ArrayRecord(make_network(spec).state_dict()),
                       num_rounds=spec["rounds"], evaluate_fn=stamp)

    return server, client


def main(spec_path: str, out_path: str) -> None:
    import flwr
    from flwr.simulation import run_simulation

    spec = json.loads(Path(spec_path).read_text())
    stamps: list[float] = []
    trained: list[int] = []
    server, client = build_apps(spec, stamps, trained)
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=spec["total"],
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": spec["cpus"]}},
    )
    if len(stamps) != spec["rounds"] + 1 or trained != [spec["per_round"]] * spec["rounds"]:
        raise RuntimeError(f"Flower trained {trained} hospitals in {len(stamps) - 1} of {spec['rounds']} rounds")
    Path(out_path).write_text(json.dumps({
        "peer": "flower",
        "version": flwr.__version__,
        "trained_per_round": trained,
        "round_ends": stamps[1:],
        "round_s": [b - a for a, b in zip(stamps, stamps[1:])],
    }, indent=2) + "\n")


if __name__ == "__main__":
    # Through the module's import name: Ray pickles the apps' functions by module, and Flower's workers
    # cannot import `__main__`.
    from fedray.benchmarks.peers.flower import main as run_by_name

    run_by_name(*sys.argv[1:])
