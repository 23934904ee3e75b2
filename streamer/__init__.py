"""Moving frames and results between processes, on time: ring buffer, pipeline, protocol, CLI."""
