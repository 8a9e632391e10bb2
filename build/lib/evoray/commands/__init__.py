"""The commands: one module each (the composition root: it builds the run directory, Ray where asked, and calls the
library), and the ``evoray`` console command that dispatches to them."""
