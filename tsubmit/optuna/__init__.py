"""Optuna on the controller side: named storages, an Optuna job's study, its dashboard.
"""
