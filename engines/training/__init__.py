"""Offline work on the models: training the tracker and the encoder, measuring them, the synthetic
neural population, and Facemap itself as a reference. Nothing on the live path imports it."""
