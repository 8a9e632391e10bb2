"""The YAML configs shipped with evoray (installed as ``evoray.configs``)."""
