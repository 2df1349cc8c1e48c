"""Model sources: checkpoints, weights-only files, URLs, the model zoo and Hugging Face folders."""
