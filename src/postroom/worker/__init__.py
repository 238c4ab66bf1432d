"""Workers: claim messages, take each through the pipeline, and settle them with the queue."""
