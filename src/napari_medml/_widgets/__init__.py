"""napari dock widgets: thin forms over the core (see DESIGN.md).

Nothing here is imported by ``import napari_medml``; npe2 imports each widget module
when its dock widget opens. torch, MONAI and the engine are imported inside functions
so that docking stays quick.
"""
