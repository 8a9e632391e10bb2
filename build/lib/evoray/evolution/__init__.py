"""Evolutionary search, free of Ray: individuals, genetic operators, strategies and fitness backends."""
