"""The one recognizer contract: an MLflow pyfunc model around a trained Keras network, letters out.

`Recognizer` does what every recognizer does the same way: it loads the network and warms it up
(`load_context`), turns a request into its answer or into a bad-request error (`predict`), declares the answer's
signature and logs itself with its settings, artifacts and this package as code (`log`). A recognizer
(asl_mlops.recognizers.sign_mnist, asl_mlops.recognizers.photos) says only how a request becomes inputs, how
inputs become probabilities (`read`: which inputs it could read and, for photos, where the hand is) and what its
answer rows hold.

Bad input raises `InputError` naming the row (counted from 0) and column; `predict` re-raises it as an
`MlflowException` with error code BAD_REQUEST, which MLflow's scoring server answers with HTTP 400.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import mlflow.pyfunc
import numpy as np
import pandas as pd

from asl_mlops.errors import InputError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from mlflow.types import ColSpec

    from asl_mlops.hands.detector import Hand



def load_error(model_uri: str, err: BaseException) -> str | None:
    """What to do about a model that fails to unpickle because it was logged by an earlier asl-mlops whose
    recognizer class has since moved (old local models are re-trained, not carried: docs/decisions.md); None for
    any other failure."""
    missing = getattr(err, "name", None) or ""
    if isinstance(err, (ModuleNotFoundError, AttributeError)) and ("asl_mlops" in missing or "asl_mlops" in str(err)):
        return (f"{model_uri} was logged by an earlier asl-mlops (its recognizer class is gone: {err}); train it "
                "again with this version (`mlflow run .` or `asl-mlops train`) and register the new run")
    return None


def load_model(model_uri: str) -> "mlflow.pyfunc.PyFuncModel":
    """`mlflow.pyfunc.load_model`, with a model logged by an earlier asl-mlops as an InputError saying to re-train
    it (`load_error`)."""
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (ModuleNotFoundError, AttributeError) as err:
        reason = load_error(model_uri, err)
        if reason is None:
            raise
        raise InputError(f"cannot load model {reason}") from None

@dataclass(frozen=True)
class Reading:
    """What a recognizer read in N inputs."""

    probabilities: np.ndarray  # (M, 24) softmax of the M inputs it could read, in order
    found: np.ndarray  # bool (N,): which inputs those are (every Sign MNIST image; a photo with a hand found)
    hands: tuple[Hand | None, ...] = ()  # photos: each photo's hand (where it is), None where none was found


def traced(forward: Callable[[tf.Tensor], tf.Tensor], input_shape: tuple[int, ...]) -> Callable:
    """`forward` over float32 batches (N, *input_shape) as one traced graph for every batch size (batches are at
    most MAX_ROWS, so no chunking). Measured on the cnn, 2 cores: 1.4 ms per single image against 10 ms for an
    eager model(x) call and ~20 ms for model.predict, which builds a tf.data pipeline per call."""
    import tensorflow as tf

    return tf.function(forward, input_signature=[tf.TensorSpec((None, *input_shape), tf.float32)], autograph=False)


class Recognizer(mlflow.pyfunc.PythonModel):
    """A request in, one answer row per input out: letter, label, confidence, top3 (and what a recognizer adds)."""

    #: Packages the served model imports; pinned to the versions it was logged with.
    packages: ClassVar[tuple[str, ...]]
    #: What the model accepts and answers, stored in its MLmodel metadata (no input schema: sign_mnist.py says why).
    input_forms: ClassVar[dict[str, str]]

    def __init__(self, **config: Any) -> None:
        """`config`: the logged model's `model_config` (keys and values as the run's params spell them: MLflow
        also logs them as run params, which must agree). Loading reads it back, with a loader's overrides."""
        self.config = config

    # --- what each recognizer supplies ------------------------------------------------------------

    def setup(self, artifacts: dict[str, str]) -> None:
        """After the network is loaded into `self.model` and `self.config` is read: the rest of the artifacts and
        settings, and the traced forward pass."""
        raise NotImplementedError

    def blank(self) -> Any:
        """One input to trace and warm up the forward pass with before the first request."""
        raise NotImplementedError

    def inputs(self, request: Any) -> Any:
        """A request table's inputs, validated; InputError naming the row and column."""
        raise NotImplementedError

    def read(self, inputs: Any) -> Reading:
        """The probabilities of the inputs, and which ones (and, for photos, where) the recognizer could read."""
        raise NotImplementedError

    def answers(self, reading: Reading) -> pd.DataFrame:
        """One answer row per input."""
        raise NotImplementedError

    @classmethod
    def more_outputs(cls) -> list[ColSpec]:
        """The answer's columns after letter, label, confidence and top3."""
        return []

    def artifacts(self) -> dict[str, str]:
        """Files logged with the model beside the network (name -> path)."""
        return {}

    # --- the contract, written once ---------------------------------------------------------------

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from asl_mlops.quiet_import import import_tensorflow_quietly

        import_tensorflow_quietly()  # `mlflow models serve` would print TensorFlow's CUDA lookups on a CPU machine
        import keras

        self.model: keras.Model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        self.config = dict(context.model_config or {})
        self.setup(context.artifacts)
        self.read(self.blank())  # trace and warm up before the first request

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import BAD_REQUEST

        try:
            inputs = self.inputs(model_input)
        except InputError as err:  # the scoring server answers MlflowException(BAD_REQUEST) with HTTP 400
            raise MlflowException(str(err), error_code=BAD_REQUEST) from err
        return self.answers(self.read(inputs))

    @classmethod
    def signature(cls) -> ModelSignature:
        """Output schema of `predict` (inputs: `input_forms`)."""
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema
        from mlflow.types.schema import Array, Object, Property

        top3 = Array(Object([Property("letter", "string"), Property("probability", "double")]))
        return ModelSignature(outputs=Schema([ColSpec("string", "letter"), ColSpec("long", "label"),
                                              ColSpec("double", "confidence"), ColSpec(top3, "top3"),
                                              *cls.more_outputs()]))

    def log(self, keras_model: keras.Model, input_example: pd.DataFrame | None, *, name: str = "recognizer",
            step: int = 0) -> ModelInfo:
        """Log this recognizer around `keras_model` to the active run, with `input_example` (a request); returns
        its ModelInfo. `step`: the run's step the model belongs to. MLflow copies the run's metrics of that step
        onto the model, so training passes the step after its last epoch, which no per-epoch value has.

        Bundles the asl_mlops package as code_paths, so the served model runs this exact code even where
        asl_mlops is not installed. Writes the .keras file to a temporary folder first."""
        import asl_mlops
        from asl_mlops.tracking import (
            pinned_requirements,  # here: tracking imports Keras, which predict --endpoint avoids
        )

        with tempfile.TemporaryDirectory() as tmp:
            keras_path = Path(tmp) / "model.keras"
            keras_model.save(keras_path)
            return mlflow.pyfunc.log_model(
                name=name, python_model=self, artifacts={"keras_model": str(keras_path), **self.artifacts()},
                code_paths=[str(Path(asl_mlops.__file__).parent)], signature=self.signature(),
                input_example=input_example, pip_requirements=pinned_requirements(self.packages),
                metadata={"input_forms": self.input_forms}, model_config=self.config, step=step)
