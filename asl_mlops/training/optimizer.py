"""Optimizer: Adam whose weight average warms up, so a short run keeps trained weights, not initial ones.

Keras' own EMA (`use_ema=True`) averages with a fixed momentum (0.99) from the first step: after 45
steps (3 epochs of 15 batches) 0.99**44 = 64% of the average is still the first step's near-random
weights. `WarmupEMAAdam` ramps the momentum up as tf.train.ExponentialMovingAverage(num_updates=step)
does, so the average follows the weights early on and smooths them later.

It is for training only. `as_keras_adam` hands its settings and state to a plain `keras.optimizers.Adam`
before a model is saved, so a saved .keras file (with its compile config) names only Keras classes and
loads where asl_mlops is not installed, e.g. the .keras file inside a logged recognizer. For the same reason
the class is deliberately not `keras.saving.register_keras_serializable`: MLflow's Keras flavors pickle
every registered custom object into each logged model (global_custom_objects.cloudpickle), by reference
to its module, so loading would then need asl_mlops even though the model does not use the class.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

#: As in tf.train.ExponentialMovingAverage: momentum (1 + t) / (10 + t) at step t, capped at ema_momentum.
WARMUP_OFFSET = 10.0


def warmup_momentum(step: int, cap: float = 0.99) -> float:
    """The averaging momentum at optimizer step `step` (0-based): 0 at step 0 (the average starts as a
    copy of the weights, as in Keras), then min(cap, (1 + step) / (10 + step)); reaches 0.99 at step 890."""
    return 0.0 if step == 0 else min(cap, (1.0 + step) / (WARMUP_OFFSET + step))


class WarmupEMAAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose `use_ema` average uses `warmup_momentum` instead of a fixed momentum.

    Everything else (SwapEMAWeights, `finalize_variable_values`, the saved state) is Keras' EMA unchanged.
    """

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras' per-step EMA hook (keras/src/optimizers/base_optimizer.py), called after the update step and
        # before `iterations` is incremented. tests/test_optimizer.py fails if Keras stops calling it.
        if not self.use_ema:
            return
        step = ops.cast(self.iterations, "float32")
        warmup = ops.minimum(self.ema_momentum, (1.0 + step) / (WARMUP_OFFSET + step))
        # Step 0 copies the weights, as Keras does: the average slots start at zero, not at the weights.
        momentum = ops.where(ops.equal(step, 0.0), 0.0, warmup)
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                m = ops.cast(momentum, var.dtype)
                average.assign(ops.add(ops.multiply(m, average), ops.multiply(ops.subtract(1.0, m), var)))


def as_keras_adam(optimizer: keras.optimizers.Adam, variables: Sequence[keras.Variable]) -> keras.optimizers.Adam:
    """A plain `keras.optimizers.Adam` with `optimizer`'s settings and, if it has been used on `variables`
    (the model's trainable variables), a copy of its state: step count, moments and weight average."""
    plain = keras.optimizers.Adam.from_config(optimizer.get_config())
    if optimizer.built:
        plain.build(list(variables))
        if len(plain.variables) != len(optimizer.variables):
            raise ValueError(f"optimizer has {len(optimizer.variables)} variables, a plain Adam built on the same "
                             f"model {len(plain.variables)}: it was not built on these variables")
        for target, source in zip(plain.variables, optimizer.variables):
            target.assign(source)
    return plain
