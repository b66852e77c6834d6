"""Model bundles, task-independent: the folder format (``config.json`` + safetensors,
atomic writes, never pickle), training checkpoints, transfer learning and export."""
