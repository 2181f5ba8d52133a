"""Model builders, bottom-up: each function builds one named network.

- `build_resnet50`: the original design (ImageNet ResNet50 fine-tuned from conv5_block3_3_conv).
- `build_cnn`: a compact CNN for 28x28 grayscale hands, far cheaper on a CPU.

The model owns its input contract: every network takes raw Sign MNIST pixels, float32 (N, 28, 28, 1)
with values 0-255 (`asl_mlops.recognizers.preprocess.to_model_input`), and its first layers do the preprocessing
its architecture needs (`preprocessing_layers`). Training, augmentation, evaluation, the trunk cache and
the served recognizer all feed it the same raw pixels, so no caller can prepare inputs another way.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, regularizers

from asl_mlops.config import TrainConfig
from asl_mlops.errors import InputError
from asl_mlops.labels import NUM_CLASSES
from asl_mlops.recognizers.preprocess import RAW_SHAPE

#: First ResNet50 layer that is fine-tuned; everything before it stays frozen (the original spec).
RESNET50_FIRST_TRAINABLE = "conv5_block3_3_conv"
#: ResNet50's input side (its minimum): Sign MNIST's 28 px are resized to it.
RESNET50_SIZE = 32
RESNET50_SHAPE = (RESNET50_SIZE, RESNET50_SIZE, 3)
#: Per-channel means that `keras.applications.resnet50.preprocess_input` ('caffe' mode) subtracts, in its
#: BGR order. The RGB -> BGR swap it also does is a no-op on gray replicated to three channels.
RESNET50_MEANS_BGR = (103.939, 116.779, 123.68)


def preprocessing_layers(architecture: str, inputs):
    """Raw pixels (N, 28, 28, 1), 0-255 -> what `architecture` was designed for, as Keras layers.

    - cnn: scale to [0, 1].
    - resnet50: resize 28 -> 32 px (bilinear), gray -> RGB, subtract the ImageNet channel means: exactly
      `preprocess_input(grayscale_to_rgb(resize(x)))` of the original design.
    """
    if architecture == "cnn":
        return layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if architecture == "resnet50":
        x = layers.Resizing(RESNET50_SIZE, RESNET50_SIZE, interpolation="bilinear", name="resize")(inputs)
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        return layers.Normalization(mean=list(RESNET50_MEANS_BGR), variance=[1.0, 1.0, 1.0],
                                    name="imagenet_mean")(x)
    raise ValueError(f"unknown architecture {architecture!r}")


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
    """The original transfer model on raw pixels: preprocessing layers, the ResNet50 base (trainable from
    conv5_block3_3_conv), GlobalMaxPool, Dense 1024 and 512 ReLU with L2, softmax over 24 letters
    (3,690,008 trainable).

    The base is built on the preprocessing layers' output (`input_tensor`), so the network is one flat
    graph that `asl_mlops.training.trunk` can split. Its weights come from a stand-alone base loaded exactly as
    `resnet50_base` loads them (an ImageNet or local weights file fits that network, not ours), copied
    layer by layer."""
    from keras.applications import ResNet50

    inputs = keras.Input(RAW_SHAPE, name="image")
    base = ResNet50(include_top=False, weights=None, input_tensor=preprocessing_layers("resnet50", inputs))
    if weights != "none":
        loaded = resnet50_base(weights, RESNET50_SHAPE)
        for layer in loaded.layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
    trainable = False
    for layer in base.layers:
        trainable = trainable or layer.name == RESNET50_FIRST_TRAINABLE
        layer.trainable = trainable
    x = layers.GlobalMaxPooling2D(name="global_max_pool")(base.output)
    x = layers.Dense(1024, activation="relu", kernel_regularizer=regularizers.l2(l2), name="dense_1024")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.l2(l2), name="dense_512")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="letter")(x)
    return keras.Model(inputs, outputs, name="resnet50_asl")


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


def build_cnn(l2: float = 1e-4, filters: tuple[int, int, int] = (32, 64, 32)) -> keras.Model:
    """Compact CNN on raw 28x28x1 pixels: rescaling, three conv blocks (`filters`), a 512-unit dense layer,
    softmax over 24."""
    inputs = keras.Input(RAW_SHAPE, name="image")
    x = conv_block(preprocessing_layers("cnn", inputs), filters[0], l2, "block1")
    x = conv_block(x, filters[1], l2, "block2", dropout=0.2)
    x = conv_block(x, filters[2], l2, "block3")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=regularizers.l2(l2), name="dense_512")(x)
    x = layers.Dropout(0.3, name="dense_dropout")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="letter")(x)
    return keras.Model(inputs, outputs, name="cnn_asl")


def average_ensemble(members: list[keras.Model]) -> keras.Model:
    """One Keras model whose output is the mean softmax of `members` (same raw-pixel input): a small
    ensemble that is saved, registered and served as a single network. It shares the members' layers."""
    inputs = keras.Input(RAW_SHAPE, name="image")
    named = [keras.Model(m.input, m.output, name=f"member{k}") for k, m in enumerate(members)]
    outputs = layers.Average(name="mean_softmax")([m(inputs) for m in named])
    return keras.Model(inputs, outputs, name=f"{members[0].name}_ensemble{len(members)}")


#: The keypoint network's standardisation layer, the one layer `fit` adapts to the training data.
KEYPOINT_STANDARDIZATION = "standardize"


def build_keypoint_mlp(num_features: int, l2: float = 0.0, units: tuple[int, int] = (256, 128),
                       dropout: float = 0.2) -> keras.Model:
    """The photo recognizer's network: keypoint features (asl_mlops.hands.keypoints) -> standardisation (a
    Normalization layer, adapted to the training features by `fit`) -> two ReLU layers with dropout -> softmax
    over 24. The features are few (~450) and informative, so a small dense network is enough."""
    inputs = keras.Input((num_features,), name="keypoints")
    x = layers.Normalization(name=KEYPOINT_STANDARDIZATION)(inputs)
    for k, width in enumerate(units, start=1):
        x = layers.Dense(width, activation="relu", kernel_regularizer=regularizers.l2(l2), name=f"dense{k}")(x)
        x = layers.Dropout(dropout, name=f"dropout{k}")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="letter")(x)
    return keras.Model(inputs, outputs, name="keypoints_asl")


def build_model(config: TrainConfig) -> keras.Model:
    """The network `config.resolved_architecture` names, with its L2 strength and weights."""
    if config.resolved_architecture == "resnet50":
        return build_resnet50(config.resolved_weights, config.l2)
    if config.resolved_architecture == "keypoints":
        from asl_mlops.hands.keypoints import NUM_FEATURES

        return build_keypoint_mlp(NUM_FEATURES, config.l2)
    return build_cnn(config.l2, config.filter_counts)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    return trainable, int(model.count_params())
