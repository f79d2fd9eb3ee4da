"""The workspace's model: a small CNN for the 8x8 digits (input (1, 8, 8), 10 classes).

Keras' counterpart of OpenFL's keras_cnn_mnist, sized for 8x8 images.
"""

import keras


def build_model(num_classes: int = 10, learning_rate: float = 1e-3) -> keras.Model:
    """Two convolutions and a dense head, compiled with Adam; built with the plan's seed."""
    inputs = keras.Input(shape=(1, 8, 8))
    x = keras.layers.Permute((2, 3, 1))(inputs)  # channels first -> (8, 8, 1)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="cnn_digits")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
