"""The data: the synthetic world and its tasks, the continual stream, and encoding into batches."""
