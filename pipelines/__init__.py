"""ccdflow's pipeline definitions (``*.yaml``, with their ``_ingredients/``), shipped as package data.

``pipetask ... -p cpBias.yaml`` finds them by name after any install
(`pipeline.definitions.pipeline_search_path`); nothing here is Python code.
"""
