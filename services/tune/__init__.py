"""`troupe tune`: hyper-parameter search and population-based training on Ray Tune."""
