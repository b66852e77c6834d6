"""Self-supervised pretraining on unlabeled images: a network learns to give back masked
or noised inputs, and its weights start segmentation or classification runs.

``fit_pretraining`` (task ``"pretraining"`` of :func:`napari_medml.fit`) returns a
:class:`~napari_medml.pretraining.model.ReconstructionModel`, whose bundle
``train --init-from`` starts from and whose ``reconstruct`` gives the reconstruction and a
per-voxel reconstruction error (an anomaly map).
"""

__all__: list[str] = []
