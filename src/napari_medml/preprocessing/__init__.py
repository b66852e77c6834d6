"""Pure array operations on images: intensity normalisation, the replayable preprocessing
recipe (windowing, denoising, resampling, cropping) and its operations."""
