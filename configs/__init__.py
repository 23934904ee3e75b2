"""Configuration files: ``default.toml`` documents and sets every setting; the others are examples."""
