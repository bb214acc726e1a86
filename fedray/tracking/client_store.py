"""Persistent per-hospital state, keyed by hospital id and round, on disk beside the checkpoint."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

from fedray.atomic import atomic_write_bytes
from fedray.messages import State, decode_state


class ClientStateStore:
    """What stateful methods keep per hospital between rounds, whichever actor ran it last.

    Each hospital's state is written as `<root>/<hospital id>/<round>.npz` (an encoded weight dict).
    Versions are kept until a checkpoint makes older ones unnecessary, so resuming from the last
    checkpoint reads exactly the states that existed at that round: `rollback` drops newer ones.
    Memory on the driver stays O(1) in the number of hospitals.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, hospital_id: str, round_index: int, payload: bytes) -> None:
        """Store `hospital_id`'s state after `round_index`."""
        folder = self._folder(hospital_id)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"{round_index:06d}.npz", payload)

    def get(self, hospital_id: str, before_round: int) -> bytes | None:
        """The hospital's latest state from a round before `before_round`, or None if it has none yet."""
        rounds = [r for r in self._rounds(hospital_id) if r < before_round]
        return (self._folder(hospital_id) / f"{max(rounds):06d}.npz").read_bytes() if rounds else None

    def hospitals(self) -> list[str]:
        """Ids of the hospitals that have stored state."""
        return sorted(unquote(p.name) for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def rollback(self, through_round: int) -> None:
        """Forget states written after `through_round` (a resume restarts from that checkpoint)."""
        for hospital_id in self.hospitals():
            for r in self._rounds(hospital_id):
                if r > through_round:
                    (self._folder(hospital_id) / f"{r:06d}.npz").unlink()

    def prune(self, through_round: int) -> None:
        """After a checkpoint at `through_round`: keep each hospital's latest state up to it, and newer ones."""
        for hospital_id in self.hospitals():
            older = [r for r in self._rounds(hospital_id) if r <= through_round]
            for r in sorted(older)[:-1]:
                (self._folder(hospital_id) / f"{r:06d}.npz").unlink()

    def _folder(self, hospital_id: str) -> Path:
        name = quote(hospital_id, safe="")  # any id is a safe folder name, reversibly
        return self.root / (name.replace(".", "%2E") if not name.strip(".") else name)  # never "." or ".."

    def _rounds(self, hospital_id: str) -> list[int]:
        folder = self._folder(hospital_id)
        return [int(p.stem) for p in folder.glob("*.npz")] if folder.is_dir() else []


class DecodedClientStates:
    """A read-only view of a ClientStateStore that returns decoded weight dicts (what methods read)."""

    def __init__(self, store: ClientStateStore) -> None:
        self.store = store

    def get(self, hospital_id: str, before_round: int) -> State | None:
        """The hospital's latest state from a round before `before_round`, decoded, or None."""
        payload = self.store.get(hospital_id, before_round)
        return decode_state(payload) if payload is not None else None
