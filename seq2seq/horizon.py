"""The horizon of a training run: the optimizer step at which its learning-rate schedule ends.

With `train.max_steps` the horizon is that step. With a time budget alone (`train.max_minutes`,
`train.max_steps=0`), the horizon is fitted to the time this machine has: training measures its
own step rate and sets the horizon to the step it will reach when the budget ends, so the
warm-up (`optim.warmup_fraction`) and the decay (cosine, linear, a cool-down) fit the budget on
a fast machine and a slow one alike.

- The step rate is measured from the end of step 1 (which carries one-off costs) and the horizon
  first fitted at step `FIRST_FIT`; until then the schedule runs as if the horizon were far
  away (a warm-up given as a fraction stays near zero for those few steps).
- Every `REFIT_EVERY` steps it is fitted again, from the rate over the last `RATE_WINDOW` of
  the budget (at least), which spans validations and checkpoints, so their time is counted, and
  follows a machine that slows down or speeds up.
- The schedule aims to end `END_MARGIN` of the budget early: room for a last slow stretch.
  Training stops at the horizon or at the end of the budget, whichever comes first.

Training passes the elapsed time averaged over processes, so every process fits the same
horizon; the horizon and its measurements are saved in the train state, so a resumed run
continues the schedule it was on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seq2seq.config import TrainConfig

FIRST_FIT = 10
REFIT_EVERY = 10
RATE_WINDOW = 0.1
END_MARGIN = 0.02
FAR_AWAY = 2**31 - 1  # the horizon before it is fitted


@dataclass
class Horizon:
    max_steps: int  # train.max_steps; 0 = none
    budget_seconds: float  # 60 * train.max_minutes; 0 = none
    steps: int = FAR_AWAY  # where the schedule ends
    samples: list[tuple[int, float]] = field(default_factory=list)  # (step, elapsed seconds)

    @classmethod
    def from_config(cls, train: TrainConfig) -> Horizon:
        horizon = cls(train.max_steps, 60.0 * train.max_minutes)
        if not horizon.fitted_to_time:
            horizon.steps = train.max_steps or FAR_AWAY
        return horizon

    @property
    def fitted_to_time(self) -> bool:
        return not self.max_steps and self.budget_seconds > 0

    @property
    def known(self) -> bool:
        """Whether the schedule has an end: a step limit, or a time budget."""
        return bool(self.max_steps or self.budget_seconds)

    def observe(self, step: int, elapsed: float) -> None:
        """Where training is after `step` steps and `elapsed` seconds; refits the horizon."""
        if not self.fitted_to_time:
            return
        if step == 1 or (step >= FIRST_FIT and step % REFIT_EVERY == 0):
            self.samples.append((step, elapsed))
        if step >= FIRST_FIT and step % REFIT_EVERY == 0 and len(self.samples) > 1:
            self.steps = self.fit(step, elapsed)
            self.forget_old_samples(elapsed)

    def fit(self, step: int, elapsed: float) -> int:
        """The step training will reach at the aimed end of the budget, at the recent rate."""
        first_step, first_elapsed = self.window_start(elapsed)
        seconds_per_step = max(elapsed - first_elapsed, 1e-9) / (step - first_step)
        seconds_left = (1 - END_MARGIN) * self.budget_seconds - elapsed
        return step + max(int(seconds_left / seconds_per_step), 0)

    def window_start(self, elapsed: float) -> tuple[int, float]:
        """The latest sample at least RATE_WINDOW of the budget ago (else the earliest)."""
        oldest_wanted = elapsed - RATE_WINDOW * self.budget_seconds
        earlier = [sample for sample in self.samples[:-1] if sample[1] <= oldest_wanted]
        return earlier[-1] if earlier else self.samples[0]

    def forget_old_samples(self, elapsed: float) -> None:
        start = self.samples.index(self.window_start(elapsed))
        del self.samples[:start]

    def reached(self, step: int) -> bool:
        """Whether a time-fitted schedule has ended (fixed horizons stop at train.max_steps)."""
        return self.fitted_to_time and step >= self.steps

    def state_dict(self) -> dict:
        return {"steps": self.steps, "samples": [list(sample) for sample in self.samples]}

    def load_state_dict(self, state: dict) -> None:
        if self.fitted_to_time:  # a run resumed with new limits keeps its own horizon otherwise
            self.steps = int(state["steps"])
            self.samples = [(int(step), float(seconds)) for step, seconds in state["samples"]]
