"""Model builders, bottom-up: each function builds one named network.

- `build_resnet50`: the original design (ImageNet ResNet50 fine-tuned from conv5_block3_3_conv).
- `build_cnn`: a compact CNN for 28x28 grayscale hands, far cheaper on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, regularizers

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.labels import NUM_CLASSES
from asl_mlops.preprocess import input_shape

#: First ResNet50 layer that is fine-tuned; everything before it stays frozen (the original spec).
RESNET50_FIRST_TRAINABLE = "conv5_block3_3_conv"


def resnet50_base(weights: str, shape: tuple[int, int, int]) -> keras.Model:
    """ResNet50 without its top, with `weights` = 'imagenet', 'none' or a local weights file."""
    from keras.applications import ResNet50

    if weights == "none":
        return ResNet50(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        try:
            return ResNet50(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as err:  # Keras raises plain Exception/URLError/OSError for failed downloads
            raise InputError(
                f"weights=imagenet: could not download the ImageNet ResNet50 weights ({err}). On an offline "
                "machine download resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 elsewhere and pass "
                "its path: --weights /path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 "
                "(MLproject: -P weights=/path/...), or use --weights none."
            ) from err
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"weights: {weights!r} is not 'imagenet', 'none' or an existing weights file")
    base = ResNet50(include_top=False, weights=None, input_shape=shape)
    try:
        base.load_weights(str(path))
    except Exception as err:  # h5py/Keras raise a variety of errors for a wrong file
        raise InputError(f"weights: {path} is not a ResNet50 (no top) weights file: {err}") from err
    return base


def build_resnet50(weights: str = "imagenet", l2: float = 1e-3) -> keras.Model:
    """The original transfer model: ResNet50 base (trainable from conv5_block3_3_conv),
    GlobalMaxPool, Dense 1024 and 512 ReLU with L2, softmax over 24 letters (3,690,008 trainable)."""
    shape = input_shape("resnet50")
    base = resnet50_base(weights, shape)
    trainable = False
    for layer in base.layers:
        trainable = trainable or layer.name == RESNET50_FIRST_TRAINABLE
        layer.trainable = trainable
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(base.output)
    x = layers.Dense(1024, activation="relu", kernel_regularizer=regularizers.l2(l2), name="dense_1024")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.l2(l2), name="dense_512")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="letter")(x)
    return keras.Model(base.input, outputs, name="resnet50_asl")


def conv_block(x, filters: int, l2: float, name: str, dropout: float = 0.0):
    """Conv 3x3 -> BatchNorm -> ReLU -> MaxPool (-> Dropout)."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_regularizer=regularizers.l2(l2), name=f"{name}_conv")(x)
    # momentum 0.9 (not 0.99): the moving statistics settle within ~50 steps, so short runs evaluate right.
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_cnn(l2: float = 1e-4) -> keras.Model:
    """Compact CNN for 28x28x1 inputs: three conv blocks, a 512-unit dense layer, softmax over 24."""
    inputs = keras.Input(input_shape("cnn"), name="image")
    x = conv_block(inputs, 75, l2, "block1")
    x = conv_block(x, 50, l2, "block2", dropout=0.2)
    x = conv_block(x, 25, l2, "block3")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.l2(l2), name="dense_512")(x)
    x = layers.Dropout(0.3, name="dense_dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="letter")(x)
    return keras.Model(inputs, outputs, name="cnn_asl")


def build_model(config: TrainConfig) -> keras.Model:
    """The network `config.architecture` names, with its L2 strength and weights."""
    if config.architecture == "resnet50":
        return build_resnet50(config.resolved_weights, config.l2)
    return build_cnn(config.l2)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    return trainable, int(model.count_params())
