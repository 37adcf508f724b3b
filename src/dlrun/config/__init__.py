"""Finding, composing and checking dlrun's Hydra configs."""
