"""Lightning callbacks dlrun adds to a run: checkpointing, progress, plots, samples, interrupts, RNG state."""
