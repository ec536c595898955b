"""Early stopping: the best validation so far and how many validations since have not beaten
it. Its state is saved with every checkpoint, so a resumed run stops where it would have."""

from __future__ import annotations


class EarlyStopping:
    """Higher metric values are better (the trainer passes -nll or BLEU)."""

    def __init__(self) -> None:
        self.best_value: float | None = None
        self.best_step = 0
        self.bad_validations = 0

    def record(self, value: float, step: int) -> bool:
        """Count one validation; True when it is the best so far."""
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_step, self.bad_validations = value, step, 0
            return True
        self.bad_validations += 1
        return False

    def out_of_patience(self, patience: int) -> bool:
        """`patience` validations in a row without improvement (0: never)."""
        return bool(patience) and self.bad_validations >= patience

    def state_dict(self) -> dict:
        return {
            "best": {"value": self.best_value, "step": self.best_step},
            "bad_validations": self.bad_validations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_value = state["best"]["value"]
        self.best_step = int(state["best"]["step"])
        self.bad_validations = int(state["bad_validations"])
