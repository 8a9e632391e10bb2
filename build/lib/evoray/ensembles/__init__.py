"""The committee specs shipped with evoray (installed as ``evoray.ensembles``)."""
