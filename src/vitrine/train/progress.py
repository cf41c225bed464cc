"""What every training loop does after a step: the progress bar, the NaN guard and the metrics rows."""
from __future__ import annotations

import math


def record_step(bar, logger, model, optimizer, step: int, steps_per_epoch: int, elapsed: float, loss_value: float,
                epoch: int, hint: str = "lower optim.lr") -> bool:
    """Update the bar, refuse a non-finite loss, log every 20 steps and at epoch ends; True when an epoch ends."""
    bar.update(1)
    bar.set_postfix(loss=f"{loss_value:.3f}", epoch=epoch)
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss became {loss_value} at step {step}; {hint}")
    end_of_epoch = step % steps_per_epoch == 0
    if step % 20 == 0 or end_of_epoch or step == 1:
        logger.log(step, {"epoch": round(step / steps_per_epoch, 3), "time_s": round(elapsed, 1), "lr": optimizer.param_groups[0]["lr"],
                          "loss": round(loss_value, 5), "logit_scale": round(float(model.logit_scale.detach().exp()), 3)})
    return end_of_epoch


def record_validation(bar, logger, step: int, steps_per_epoch: int, elapsed: float, metrics: dict) -> None:
    logger.log(step, {"epoch": round(step / steps_per_epoch, 3), "time_s": round(elapsed, 1), **metrics})
    bar.write(f"step {step} epoch {step / steps_per_epoch:.2f}: " + ", ".join(f"{k[4:]}={v:.3f}" for k, v in metrics.items()))
