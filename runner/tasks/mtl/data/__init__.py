"""Data layer: Miniscapes files (``miniscapes``), the synthetic generator (``synth``, drawing with
``synth_geometry`` and ``synth_objects``), the packed uint8 cache (``packed``) and device batches
(``batches``). Submodules are imported explicitly by their users so that
``import runner.tasks.mtl.data`` stays cheap (no torch, no PIL)."""
