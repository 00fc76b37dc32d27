"""The two augmentation layers Keras 3 lacks: random resized crop and pixel-scale noise.

``keras.layers.RandomCrop`` changes the output size (and centre-crops at
inference), and ``keras.layers.GaussianNoise`` caps its std at 1.0, which is
useless on raw [0, 255] pixels. These two layers fill the gap the way Keras'
own preprocessing layers behave: random only when ``training`` is true, the
identity otherwise, seeded, and usable inside a ``tf.data`` map. Each class is
self-contained (it needs only ``import keras``) because ``lib.augment.keras_code``
prints its source for users to copy.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="kestrel")
class RandomResizedCrop(keras.layers.Layer):
    """Crop a random window and resize it back, so the output shape never changes.

    Each image keeps a random share in ``[1 - max_crop, 1]`` of its height and
    width (the same share on both axes, so the aspect ratio holds) at a random
    position; the window is stretched back to the full size with bilinear
    interpolation.

    Args:
        max_crop: largest share of each side cut away, in [0, 1).
        seed: integer seed for reproducible crops.
    """

    def __init__(self, max_crop, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= max_crop < 1.0:
            raise ValueError(f"RandomResizedCrop.max_crop must be in [0, 1), got {max_crop}")
        self.max_crop = max_crop
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training or self.max_crop == 0:
            return images
        unbatched = len(images.shape) == 3
        if unbatched:
            images = keras.ops.expand_dims(images, 0)
        shape = keras.ops.shape(images)
        batch = shape[0]
        height = keras.ops.cast(shape[1] - 1, self.compute_dtype)
        width = keras.ops.cast(shape[2] - 1, self.compute_dtype)
        scale = keras.random.uniform(
            (batch, 1), 1.0 - self.max_crop, 1.0, dtype=self.compute_dtype, seed=self.seed_generator
        )
        # Where the window starts, as a share of the room left beside it.
        start = keras.random.uniform(
            (batch, 2), 0.0, 1.0, dtype=self.compute_dtype, seed=self.seed_generator
        ) * (1.0 - scale)
        zeros = keras.ops.zeros_like(scale)
        # Output pixel (x, y) reads input pixel (scale*x + x0, scale*y + y0).
        transform = keras.ops.concatenate(
            [scale, zeros, start[:, :1] * width, zeros, scale, start[:, 1:] * height, zeros, zeros],
            axis=1,
        )
        out = keras.ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="reflect"
        )
        return out[0] if unbatched else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_crop": self.max_crop, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kestrel")
class RandomGaussianNoise(keras.layers.Layer):
    """Add Gaussian noise in pixel units, then clip to the value range.

    Args:
        stddev: noise standard deviation, in the images' own units (e.g. 12.75
            is 5% of 255).
        value_range: ``(low, high)`` of the pixel values; the output is clipped to it.
        seed: integer seed for reproducible noise.
    """

    def __init__(self, stddev, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(**kwargs)
        if stddev < 0:
            raise ValueError(f"RandomGaussianNoise.stddev must be >= 0, got {stddev}")
        self.stddev = stddev
        self.value_range = tuple(value_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        images = keras.ops.cast(images, self.compute_dtype)
        if not training or self.stddev == 0:
            return images
        noise = keras.random.normal(
            keras.ops.shape(images),
            stddev=self.stddev,
            dtype=self.compute_dtype,
            seed=self.seed_generator,
        )
        return keras.ops.clip(images + noise, self.value_range[0], self.value_range[1])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "stddev": self.stddev,
            "value_range": self.value_range,
            "seed": self.seed,
        }
