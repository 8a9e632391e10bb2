"""The published genotypes shipped with evoray (installed as ``evoray.populations``)."""
