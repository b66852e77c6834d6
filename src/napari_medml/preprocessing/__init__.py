"""Pure array operations on images: intensity normalisation, the replayable preprocessing
recipe (windowing, denoising, resampling, cropping) and its operations, and the input
checks every task shares (``inputs``: image layout, spacings, patch shrinking)."""
