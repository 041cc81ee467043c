"""The analysis (torch-free): metrics of the score matrix, scorers, sensitivity profiles,
routing usage and the comparison tables."""
