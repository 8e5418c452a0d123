"""The learner: segment contract, return and loss math, models, and the A2C update.

Imports nothing else of the project, and needs no Ray except in `learner.remote`.
"""
