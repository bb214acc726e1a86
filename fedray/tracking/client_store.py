"""Persistent per-hospital state, keyed by hospital id and round, on disk beside the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, unquote

from fedray.atomic import atomic_write_bytes
from fedray.messages import State, decode_state

_RECORD = "kept rounds.json"  # no hospital folder has a space (quoted); which rounds' states survive pruning (see `ClientStateStore.complete_at`)


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
        record = self._record()
        if record is not None:
            kept = [r for r in record["kept"] if r <= through_round]
            self._write_record(min(record["through"], through_round), kept, upto=through_round)

    def prune(self, through_round: int, keep: tuple[int, ...] = ()) -> None:
        """After a checkpoint at `through_round`: keep each hospital's latest state up to it, and newer
        ones, and its latest state up to each round in `keep` (the best round: `--round best` reads them)."""
        keep = tuple(sorted({r for r in keep if 0 < r <= through_round}))
        for hospital_id in self.hospitals():
            older = sorted(r for r in self._rounds(hospital_id) if r <= through_round)
            needed = {max((r for r in older if r <= k), default=None) for k in (*keep, through_round)}
            for r in older:
                if r not in needed:
                    (self._folder(hospital_id) / f"{r:06d}.npz").unlink()
        self._write_record(through_round, list(keep))

    def complete_at(self, round_index: int) -> bool | None:
        """Whether every hospital's state as it was after `round_index` is still stored (the last
        pruned round or later, or a kept one); None for a store pruned before this was recorded."""
        record = self._record()
        if record is None:
            return None
        upto = record["upto"]  # set by a rollback: later rounds are incomplete until redone and pruned
        recent = round_index >= record["through"] and (upto is None or round_index <= upto)
        return recent or round_index in record["kept"]

    def _record(self) -> dict | None:
        path = self.root / _RECORD
        return json.loads(path.read_text()) if path.is_file() else None

    def _write_record(self, through_round: int, kept: list[int], upto: int | None = None) -> None:
        if not self.root.is_dir():
            return  # a method that keeps no states
        atomic_write_bytes(self.root / _RECORD, json.dumps({"through": through_round, "kept": kept, "upto": upto}).encode())

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
