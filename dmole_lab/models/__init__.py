"""The models: loading a checkpoint folder, its anatomy (towers, layers, candidate modules), and
the embedded tiny LLaVA with its pre-training."""
