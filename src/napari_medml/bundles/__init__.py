"""Model bundles, task-independent: the folder format (``config.json`` + safetensors,
atomic writes, never pickle), the frozen model spec that is both a model's constructor
input and its ``config.json`` (``spec``), training checkpoints, transfer learning and
export."""
