"""Training: LightningModules that wrap plain networks, losses, metrics and callbacks."""
