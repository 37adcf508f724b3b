"""Objectives: LightningModules that train a plain network (classification, translation, language model)."""
