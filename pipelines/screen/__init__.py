"""Screening: Ray Data batch inference over whole archives into study-level reports.

Light on purpose (no imports): the scoring actor's module (`pipelines.screen.scoring`) is
imported by every Ray worker that scores, and must not bring the driver's MLflow and
plotting imports (`pipelines.screen.run`) with it.
"""
