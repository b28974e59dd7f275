"""Analyses on recorded runs and models: data maps, head importance, saliency, projections.

Each module is usable without the app; import the one you need (``t3vis.analysis.saliency``'s methods pull in torch,
``t3vis.analysis.datamaps`` only numpy).
"""
