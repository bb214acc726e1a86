"""Same-process A/B (CPU clock), in the peers venv: pfl-research 0.6's per-user FedAvg path (what
FederatedNNAlgorithm.simulate_one_user + FederatedAveraging.train_one_user + SimulatedBackend's accumulate run
for a user without evaluation or postprocessors) against fedray's bare update, on the same network, loss,
optimiser and in-memory arrays (4 cases of one hospital, batch 2, one epoch). Ad-hoc (session 9)."""
import sys, time, statistics, numpy as np, torch
sys.path.insert(0, "/work/h13")
torch.set_num_threads(1)
from pfl.data.dataset import Dataset
from pfl.hyperparam import NNTrainHyperParams
from pfl.model.pytorch import PyTorchModel
from pfl.internal.bridge import FrameworkBridgeFactory as bridges
from pfl.internal.ops import get_ops
from fedray.benchmarks import bare
spec = {"channels": [8,16,32,64], "strides": [2,2,2], "num_res_units": 0, "out_channels": 8, "patch_size": [32,32,32],
        "optimizer": "adam", "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 2, "local_steps": 2}
class Network(torch.nn.Module):  # as fedray/benchmarks/peers/pfl_research.py wraps it
    def __init__(self):
        super().__init__(); self.net = bare.make_network(spec); self.loss_fn = bare.make_loss(spec)
    def forward(self, image): return self.net(image)
    def loss(self, image, label, eval=False):
        self.eval() if eval else self.train()
        return self.loss_fn(self(image), label.long())
    def metrics(self, image, label, eval=False): return {}
torch.manual_seed(0)
network = Network()
model = PyTorchModel(model=network, local_optimizer_create=lambda params, lr: bare.make_optimizer({**spec, "lr": lr}, params),
                     central_optimizer=torch.optim.SGD(network.parameters(), lr=1.0))
rng = np.random.default_rng(0)
images = rng.standard_normal((4, 1, 32, 32, 32), dtype=np.float32)
labels = rng.integers(0, 8, (4, 1, 32, 32, 32)).astype(np.int64)
user = Dataset(raw_data=[images, labels], user_id=0)
params = NNTrainHyperParams(local_num_epochs=1, local_learning_rate=spec["lr"], local_batch_size=2)
state = {"init": None, "acc": None}
def pfl_user():
    s = time.process_time()
    state["init"] = model.get_parameters(state["init"])
    bridges.sgd_bridge().do_sgd(model, user, params)
    stats = model.get_model_difference(state["init"])
    model.set_parameters(state["init"])
    state["acc"] = stats.apply_elementwise(get_ops().clone) if state["acc"] is None else stats + state["acc"]
    return time.process_time() - s
bmodel, bloss = bare.make_network(spec), bare.make_loss(spec)
weights = {k: v.clone() for k, v in bmodel.state_dict().items()}
batches = bare.hospital_batches(images, labels, 2)
def bare_update():
    s = time.process_time(); bmodel.load_state_dict(weights); bare.update(bmodel, bloss, spec, batches, 2); return time.process_time() - s
for _ in range(5): pfl_user(); bare_update()
P, B = [], []
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 60):
    if i % 2: P.append(pfl_user()); B.append(bare_update())
    else: B.append(bare_update()); P.append(pfl_user())
p, b = statistics.median(P), statistics.median(B)
print(f"pfl per user {p*1e3:.2f} ms CPU, bare update {b*1e3:.2f} ms CPU: pfl/bare {p/b:.3f} (medians of {len(P)} alternations); paired median diff {statistics.median([x-y for x,y in zip(P,B)])*1e3:.2f} ms")
